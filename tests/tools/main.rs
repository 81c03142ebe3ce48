//! The command line and the tools around the server: startup and its
//! options, the load generator (`ragnarok-load`) and its relay floor, the
//! short soak, the benchmark report script. Each module was a test binary
//! of its own; see TESTING.md.

mod bench_report;
mod floor_relay;
mod load_generator;
mod soak;
mod startup;
