//! Open-loop fanout (`fanout --rate R`): each of the C senders sends R
//! Broadcasts a second on its own schedule, whatever comes back, as the
//! people in a real room do. Closed-loop fanout (send, wait for your own
//! copy, send again) lets the load generator's own pace decide how many
//! messages the server batches into one write; here the offered load is
//! fixed, so the server's CPU at that load is its own figure.
//!
//! The senders' phases are spread evenly over the period: the room's sends
//! are C × R a second, evenly spaced, sender k taking every C-th slot. A
//! timerfd wakes the loop at each due time (mio's poll timeout has only
//! millisecond resolution), and the due sends are also checked between the
//! events of a busy poll round. A send that leaves more than `LATE` after
//! its scheduled time is counted: many of them mean the load generator
//! could not keep the schedule, and the run's figures are not the server's.
//! Sends still due when the window ends are not made, so a generator that
//! falls behind also shows as an achieved rate below the offered one.
//!
//! Latency runs from the send time stamped in each message (as in the
//! closed loop) to its arrival; lost and reordered are checked per sender
//! and receiver as in the closed loop. The server's CPU is sampled at the
//! start and at the end of the sending window, so its utilisation and the
//! deliveries counted in the same window give the CPU per delivery.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::{Load, Phase, ProcSample, Procs, per_process, percentile, sample_all};

/// The timerfd's token (client tokens are their indices).
pub const TIMER: Token = Token(usize::MAX - 1);
/// A send later than this after its scheduled time is a late send.
pub const LATE: Duration = Duration::from_millis(1);
/// Before the window, the room must have been quiet this long: the join
/// traffic (the peers send the full user list to everyone on every join)
/// can keep a TLS client busy for seconds after the last login.
pub const SETTLE: Duration = Duration::from_millis(300);
/// ... but no longer than this.
pub const SETTLE_MAX: Duration = Duration::from_secs(60);
/// After the sending window, wait at most this long for the room to go
/// quiet. An overloaded server may hold a backlog of many seconds; what has
/// not arrived by then is reported as undelivered, not as lost.
pub const DRAIN: Duration = Duration::from_secs(10);

/// When each send of the run is due. Send n (from 0) belongs to sender
/// n mod C and is due n / (C × R) seconds after the start: every sender
/// keeps its own period 1/R, with its phase shifted by 1/C of a period from
/// the previous sender's. (Computed from n each time, so no rounding error
/// adds up over a run.)
#[derive(Clone, Debug)]
pub struct Schedule {
    senders: u64,
    /// The room's interval between two sends, 1 / (C × R) s, in ns.
    interval_ns: f64,
    /// Sends due at or after this (ns since the start) are not made.
    end_ns: u64,
    /// The next send to make.
    next: u64,
}

impl Schedule {
    /// `rate`: messages per second per sender.
    pub fn new(rate: f64, senders: usize, length: Duration) -> Schedule {
        Schedule {
            senders: senders.max(1) as u64,
            interval_ns: 1e9 / (rate * senders.max(1) as f64),
            end_ns: u64::try_from(length.as_nanos()).unwrap_or(u64::MAX),
            next: 0,
        }
    }

    /// When send `n` is due, in ns since the start.
    pub fn due_ns(&self, n: u64) -> u64 {
        (n as f64 * self.interval_ns).round() as u64
    }

    /// When the next send is due; `None` once the window is over.
    pub fn next_due_ns(&self) -> Option<u64> {
        Some(self.due_ns(self.next)).filter(|&due| due < self.end_ns)
    }

    /// The next send if it is due by `now_ns`: its sender and its due time.
    pub fn pop_due(&mut self, now_ns: u64) -> Option<(usize, u64)> {
        let due = self.next_due_ns().filter(|&due| due <= now_ns)?;
        let sender = (self.next % self.senders) as usize;
        self.next += 1;
        Some((sender, due))
    }

    /// Messages per second offered by the whole room.
    pub fn offered_per_sec(&self) -> f64 {
        1e9 / self.interval_ns
    }

    /// How many sends the whole window holds.
    pub fn total(&self) -> u64 {
        // due_ns is monotonic in n: binary search for the first n at the end.
        let (mut lo, mut hi) = (0u64, (self.end_ns as f64 / self.interval_ns) as u64 + 2);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.due_ns(mid) < self.end_ns { lo = mid + 1 } else { hi = mid }
        }
        lo
    }
}

/// A monotonic-clock timerfd on the poll loop.
struct Timer(OwnedFd);

impl Timer {
    fn new(registry: &Registry) -> io::Result<Timer> {
        let flags = libc::TFD_NONBLOCK | libc::TFD_CLOEXEC;
        // SAFETY: plain integer arguments, no pointers; the result is a new
        // descriptor or -1, checked next.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is open (not -1: checked above) and new, so nothing
        // else owns or will close it; the OwnedFd becomes its only owner.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        registry.register(&mut SourceFd(&fd.as_raw_fd()), TIMER, Interest::READABLE)?;
        Ok(Timer(fd))
    }

    /// Fires once, `after` from now (at once if zero).
    fn arm(&self, after: Duration) {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: the descriptor is the timerfd `self.0` owns, open while
        // `self` is borrowed; `&spec` points to an initialised itimerspec
        // that outlives the call, which only reads it; a null `old_value` is
        // allowed (timerfd_settime(2)) and means nothing is written back.
        unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    }

    /// Consumes the expiry, so that the next one is a new edge.
    fn clear(&self) {
        let mut ticks = [0u8; 8];
        // SAFETY: the descriptor is the timerfd `self.0` owns, open while
        // `self` is borrowed; read writes at most `ticks.len()` bytes through
        // the pointer, and `ticks` is a live local buffer of exactly that
        // many (8: what a timerfd read needs). The result is not needed: an
        // error (EAGAIN, no expiry yet) leaves nothing to consume.
        unsafe { libc::read(self.0.as_raw_fd(), ticks.as_mut_ptr().cast(), ticks.len()) };
    }
}

/// The state of an open-loop run.
pub struct OpenLoop {
    schedule: Schedule,
    timer: Timer,
    rate: f64,
    start: Option<Instant>,
    /// When the next send is due (cached from the schedule).
    next_due: Option<Instant>,
    late: u64,
    /// The late sends that fell due while the loop slept in its poll: the
    /// timer woke it late (the machine's wake-up latency, not our work).
    late_woken: u64,
    max_late: Duration,
    /// When the last poll began and returned.
    polled: Option<(Instant, Instant)>,
    /// Sends skipped because their sender had been disconnected.
    skipped: u64,
    /// At the end of the sending window: when, the deliveries so far and
    /// the server's CPU.
    window_end: Option<(Instant, u64, Option<Procs>)>,
    /// When every user had logged in (the join traffic then settles).
    all_in: Option<Instant>,
    /// The whole machine's busy CPU time at the start and the end of the
    /// window: what other processes used meanwhile is the machine's load.
    machine: (Option<MachineTimes>, Option<MachineTimes>),
    /// False when the run stopped before the room went quiet.
    drained: bool,
    /// Messages a live receiver had not got when the run stopped undrained.
    undelivered: u64,
}

impl OpenLoop {
    pub fn new(
        registry: &Registry,
        rate: f64,
        senders: usize,
        length: Duration,
    ) -> io::Result<Self> {
        Ok(OpenLoop {
            schedule: Schedule::new(rate, senders, length),
            timer: Timer::new(registry)?,
            rate,
            start: None,
            next_due: None,
            late: 0,
            late_woken: 0,
            polled: None,
            max_late: Duration::ZERO,
            skipped: 0,
            window_end: None,
            all_in: None,
            machine: (None, None),
            drained: true,
            undelivered: 0,
        })
    }

    /// Records what a live receiver never got: lost if the room went
    /// quiet, undelivered if the run stopped while the server still had a
    /// backlog (see `DRAIN`). Returns the part that counts as lost.
    pub fn missing(&mut self, missing: u64) -> u64 {
        if self.drained {
            missing
        } else {
            self.undelivered += missing;
            0
        }
    }
}

impl Load {
    /// The first send is due now; the window ends `duration` later.
    pub(crate) fn open_loop_begin(&mut self, start: Instant) {
        let Some(open) = self.open.as_mut() else { return };
        open.start = Some(start);
        open.machine.0 = machine_times();
        // Room for every latency up front: growing a vector of millions
        // mid-run copies it, a pause of milliseconds that delays sends.
        let expected = open.schedule.total().saturating_mul(self.clients.len() as u64);
        self.stats.latencies_us.reserve(expected.min(50_000_000) as usize);
        self.send_due();
    }

    /// Polls, noting when the poll began and returned (to tell why a late
    /// send was late).
    pub(crate) fn poll_events(
        &mut self,
        events: &mut mio::Events,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        let began = Instant::now();
        self.poll.poll(events, timeout)?;
        if let Some(open) = self.open.as_mut() {
            open.polled = Some((began, Instant::now()));
        }
        Ok(())
    }

    /// The timer fired.
    pub(crate) fn on_timer(&mut self) {
        if let Some(open) = &self.open {
            open.timer.clear();
        }
        self.send_due();
    }

    /// Between the events of one poll round: send whatever fell due while
    /// the round was being handled (checked against the time the event was
    /// read, so no extra clock read).
    pub(crate) fn send_if_due(&mut self) {
        if self.open.as_ref().and_then(|o| o.next_due).is_some_and(|d| d <= self.last_activity) {
            self.send_due();
        }
    }

    /// Makes every send that is due (a late one at once, counted), then
    /// sets the timer for the next.
    fn send_due(&mut self) {
        loop {
            let Some(open) = self.open.as_mut() else { return };
            let Some(start) = open.start else { return };
            let now = Instant::now();
            let now_ns = now.duration_since(start).as_nanos() as u64;
            // A generator that fell behind does not catch up after the
            // window: what it could not send by then is missing from the
            // achieved rate.
            let pop =
                if now_ns < open.schedule.end_ns { open.schedule.pop_due(now_ns) } else { None };
            let Some((sender, due_ns)) = pop else {
                if now_ns >= open.schedule.end_ns {
                    open.next_due = None;
                    return;
                }
                open.next_due =
                    open.schedule.next_due_ns().map(|ns| start + Duration::from_nanos(ns));
                if let Some(due) = open.next_due {
                    open.timer.arm(due.saturating_duration_since(now));
                }
                return;
            };
            let late = Duration::from_nanos(now_ns - due_ns);
            if late > LATE {
                open.late += 1;
                // Asleep in the poll when it fell due, and woken late; or
                // busy (handling events) when it fell due.
                let due = start + Duration::from_nanos(due_ns);
                if open.polled.is_some_and(|(began, returned)| began <= due && due < returned) {
                    open.late_woken += 1;
                }
            }
            open.max_late = open.max_late.max(late);
            if self.clients[sender].phase != Phase::Ready {
                open.skipped += 1;
                continue;
            }
            self.send_broadcast(sender);
            self.flush(sender);
        }
    }

    /// The sending window is over: note the deliveries and the server's CPU.
    pub(crate) fn end_of_sending(&mut self) {
        let deliveries = self.stats.deliveries;
        let server = sample_all(&self.o.pids);
        if let Some(open) = self.open.as_mut()
            && open.window_end.is_none()
        {
            open.window_end = Some((Instant::now(), deliveries, server));
            open.machine.1 = machine_times();
        }
    }

    /// Everyone has logged in: whether the join traffic is over (nothing
    /// received for `SETTLE`). The closed loop starts at once.
    pub(crate) fn settled(&mut self, now: Instant) -> bool {
        let Some(open) = self.open.as_mut() else { return true };
        let all_in = *open.all_in.get_or_insert(now);
        let settled = now.duration_since(self.last_activity) >= SETTLE
            || now.duration_since(all_in) >= SETTLE_MAX;
        if !settled {
            // The window starts when sending does.
            self.sending_until = None;
        }
        settled
    }

    /// Open loop: whether the run is over, which is when every live user
    /// has every message sent, or `DRAIN` after the window (an overloaded
    /// server still has a backlog then). Silence is no sign of the end:
    /// an overloaded server may stall for longer than any quiet period.
    /// `None` in the closed loop.
    pub(crate) fn open_loop_done(&mut self, now: Instant) -> Option<bool> {
        let open = self.open.as_mut()?;
        let Some(until) = self.sending_until.filter(|&t| now >= t) else { return Some(false) };
        if now >= until + DRAIN {
            open.drained = false;
            return Some(true);
        }
        // Cheap first: enough copies have arrived for it to be possible.
        let live = self.clients.iter().filter(|c| c.phase == Phase::Ready).count() as u64;
        if self.stats.deliveries < self.stats.sent.saturating_mul(live) {
            return Some(false);
        }
        let senders = self.o.senders;
        let sent: Vec<u64> = self.clients[..senders].iter().map(|c| c.seq).collect();
        let complete = self.clients.iter().filter(|c| c.phase == Phase::Ready).all(|c| {
            c.last_seen.iter().zip(&sent).all(|(&seen, &sent)| seen.wrapping_add(1) >= sent)
        });
        Some(complete)
    }
}

/// The CPU time of all the machine's cores, from /proc/stat.
#[derive(Clone, Copy)]
struct MachineTimes {
    /// Busy (not idle, not waiting for I/O): user, nice, system, irq,
    /// softirq and steal. (A tick that lands in an interrupt is also
    /// charged to the process it interrupted, so interrupts during this
    /// run's two processes count as theirs.)
    busy: Duration,
    /// Taken by the hypervisor for other virtual machines: while it lasts,
    /// a virtual core runs nothing of ours, and a due send waits.
    steal: Duration,
}

fn machine_times() -> Option<MachineTimes> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> =
        stat.lines().next()?.split_whitespace().skip(1).map_while(|v| v.parse().ok()).collect();
    let sum = |fields: &[usize]| fields.iter().map(|&i| ticks.get(i).copied().unwrap_or(0)).sum();
    // SAFETY: sysconf takes a plain integer, touches no memory of ours and
    // has no preconditions; its -1 (unknown) is clamped to 1 below.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let time = |t: u64| Duration::from_micros(t * 1_000_000 / hz);
    Some(MachineTimes { busy: time(sum(&[0, 1, 2, 5, 6, 7])), steal: time(sum(&[7])) })
}

/// Prints the open-loop run's figures and its JSON line.
pub fn report(
    load: &Load,
    open: &OpenLoop,
    measure_start: Option<(Instant, Option<Procs>)>,
    own_percent: Option<f64>,
) {
    let o = &load.o;
    let s = &load.stats;
    let senders = o.senders;
    let offered = open.schedule.offered_per_sec();
    let (t0, at_start_all) = measure_start.unwrap_or((Instant::now(), None));
    let (t1, window_deliveries, at_end_all) =
        open.window_end.clone().unwrap_or((Instant::now(), s.deliveries, sample_all(&o.pids)));
    let at_start = at_start_all.as_ref().map(Procs::total);
    let at_end = at_end_all.as_ref().map(Procs::total);
    let wall = t1.duration_since(t0).as_secs_f64().max(1e-9);
    let sent_per_sec = s.sent as f64 / o.duration.as_secs_f64().max(1e-9);
    let per_sec = window_deliveries as f64 / wall;
    let server = at_start.zip(at_end);
    let cpu = |part: fn(&ProcSample) -> Duration| {
        server.map(|(b, a)| part(&a).saturating_sub(part(&b)).as_secs_f64())
    };
    let server_pct = cpu(|p| p.cpu).map(|c| c * 100.0 / wall);
    let per_delivery = |c: Option<f64>| {
        c.filter(|_| window_deliveries > 0).map(|c| c * 1e6 / window_deliveries as f64)
    };
    // The machine's load during the window, apart from this run's two
    // processes: the CPU everything else used, in % of one core.
    // Steal is in it, and also shown on its own.
    let others_pct = match (open.machine, cpu(|p| p.cpu), own_percent) {
        ((Some(b), Some(a)), Some(server), Some(own)) => {
            let busy = a.busy.saturating_sub(b.busy).as_secs_f64();
            Some(((busy - server - own / 100.0 * wall) * 100.0 / wall).max(0.0))
        }
        _ => None,
    };
    let steal_pct = match open.machine {
        (Some(b), Some(a)) => Some(a.steal.saturating_sub(b.steal).as_secs_f64() * 100.0 / wall),
        _ => None,
    };
    let cpu_per = per_delivery(cpu(|p| p.cpu));
    let sys_per = per_delivery(cpu(|p| p.sys));
    let (proc_lines, procs_json) =
        per_process(at_start_all.as_ref(), at_end_all.as_ref(), wall, window_deliveries);
    let mut lat = s.latencies_us.clone();
    lat.sort_unstable();
    let (p50, p99, max) = (percentile(&lat, 0.5), percentile(&lat, 0.99), percentile(&lat, 1.0));
    let max_late_ms = open.max_late.as_secs_f64() * 1e3;
    println!(
        "scenario        fanout, open loop: {senders} senders x {} msgs/s = {offered:.0} msgs/s offered",
        open.rate
    );
    println!("users           {} logged in of {} ({} dropped)", s.logged_in, o.users, s.dead);
    println!(
        "sent            {} of {} scheduled = {sent_per_sec:.1}/s ({:.1} % of offered)",
        s.sent,
        open.schedule.total(),
        sent_per_sec * 100.0 / offered
    );
    println!(
        "late sends      {} (more than {} ms after their time; max {max_late_ms:.2} ms): {} fell due \
         while the load generator was running (busy, or waiting for its core), {} while it \
         slept in its poll and the timer woke it late",
        open.late,
        LATE.as_millis(),
        open.late - open.late_woken,
        open.late_woken,
    );
    println!("deliveries      {window_deliveries} in the {wall:.1} s window = {per_sec:.0}/s");
    println!("latency ms      p50 {p50:.2}  p99 {p99:.2}  max {max:.2}");
    println!("lost/reordered  {} / {}", s.lost, s.reordered);
    if !open.drained {
        println!(
            "undelivered     {} copies still on their way {} s after the window (server backlog)",
            open.undelivered,
            DRAIN.as_secs()
        );
    }
    if let (Some(pct), Some(c), Some(k)) = (server_pct, cpu_per, sys_per) {
        println!(
            "server CPU      {pct:.1} % of one core = {c:.3} us per delivery ({k:.3} of it in the kernel)"
        );
    }
    if let Some(a) = load.o.pid.and(at_end) {
        println!("server RSS      {} KiB (peak {} KiB)", a.rss_kib, a.peak_kib);
    }
    for line in &proc_lines {
        println!("{line}");
    }
    if let Some(p) = own_percent {
        println!(
            "load generator  {p:.0} % of its core (near 100 %: its ceiling, not the server's)"
        );
    }
    if let (Some(p), Some(steal)) = (others_pct, steal_pct) {
        println!(
            "the rest        {p:.0} % of one core during the window: the machine's load (other \
             processes, and the hypervisor's steal: {steal:.0} %)"
        );
    }
    let opt = |v: Option<f64>| v.map_or("null".to_owned(), |v| format!("{v:.4}"));
    println!(
        "{{\"scenario\":\"fanout\",\"mode\":\"open\",\"users\":{},\"logged_in\":{},\"dropped\":{},\"senders\":{senders},\"rate_per_sender\":{},\"offered_per_sec\":{offered:.1},\"scheduled\":{},\"sent\":{},\"sent_per_sec\":{sent_per_sec:.1},\"late_sends\":{},\"late_woken\":{},\"max_late_ms\":{max_late_ms:.3},\"seconds\":{wall:.4},\"deliveries\":{window_deliveries},\"per_sec\":{per_sec:.1},\"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3},\"max_ms\":{max:.3},\"lost\":{},\"reordered\":{},\"drained\":{},\"undelivered\":{},\"server_cpu_pct\":{},\"cpu_us_per_delivery\":{},\"sys_us_per_delivery\":{},\"rss_kib\":{},\"peak_rss_kib\":{},\"loadgen_cpu_pct\":{},\"others_cpu_pct\":{},\"steal_pct\":{}{procs_json}}}",
        o.users,
        s.logged_in,
        s.dead,
        open.rate,
        open.schedule.total(),
        s.sent,
        open.late,
        open.late_woken,
        s.lost,
        s.reordered,
        open.drained,
        open.undelivered,
        opt(server_pct),
        opt(cpu_per),
        opt(sys_per),
        at_end.map_or("null".into(), |a| a.rss_kib.to_string()),
        at_end.map_or("null".into(), |a| a.peak_kib.to_string()),
        opt(own_percent),
        opt(others_pct),
        opt(steal_pct),
    );
}

#[cfg(test)]
mod tests {
    use super::Schedule;
    use std::time::Duration;

    fn all_due(mut s: Schedule) -> Vec<(usize, u64)> {
        std::iter::from_fn(|| s.pop_due(u64::MAX)).collect()
    }

    #[test]
    fn senders_keep_their_period_with_phases_spread_evenly() {
        // 4 senders at 10/s for 1 s: 40 sends, one every 25 ms.
        let s = Schedule::new(10.0, 4, Duration::from_secs(1));
        assert_eq!(s.offered_per_sec(), 40.0);
        let sends = all_due(s.clone());
        assert_eq!(sends.len(), 40);
        assert_eq!(s.total(), 40);
        for (n, &(sender, due)) in sends.iter().enumerate() {
            assert_eq!(sender, n % 4);
            assert_eq!(due, n as u64 * 25_000_000, "the room's sends are evenly spaced");
        }
        // Each sender on its own: every 100 ms, starting at its phase.
        for k in 0..4 {
            let own: Vec<u64> = sends.iter().filter(|x| x.0 == k).map(|x| x.1).collect();
            assert_eq!(own.len(), 10);
            assert_eq!(own[0], k as u64 * 25_000_000);
            assert!(own.windows(2).all(|w| w[1] - w[0] == 100_000_000));
        }
    }

    #[test]
    fn only_what_is_due_is_popped_and_a_late_caller_catches_up() {
        let mut s = Schedule::new(100.0, 10, Duration::from_secs(1)); // a send every 1 ms
        assert_eq!(s.next_due_ns(), Some(0));
        assert_eq!(s.pop_due(0), Some((0, 0)));
        assert_eq!(s.pop_due(999_999), None, "the next is due at 1 ms");
        assert_eq!(s.next_due_ns(), Some(1_000_000));
        // 5.5 ms late: the five sends due meanwhile come out at once, in order.
        let burst: Vec<_> = std::iter::from_fn(|| s.pop_due(5_500_000)).collect();
        assert_eq!(
            burst,
            [(1, 1_000_000), (2, 2_000_000), (3, 3_000_000), (4, 4_000_000), (5, 5_000_000)]
        );
        assert_eq!(s.next_due_ns(), Some(6_000_000));
    }

    #[test]
    fn the_window_ends_on_time_even_with_uneven_division() {
        // 3 senders at 7/s: period 142.857 ms, a phase step of 47.619 ms.
        let s = Schedule::new(7.0, 3, Duration::from_secs(2));
        let sends = all_due(s.clone());
        assert_eq!(sends.len() as u64, s.total());
        assert_eq!(sends.len(), 42, "7/s x 3 senders x 2 s");
        assert!(sends.iter().all(|&(_, due)| due < 2_000_000_000));
        assert!(sends.windows(2).all(|w| w[0].1 < w[1].1), "in time order");
        for k in 0..3 {
            let own: Vec<u64> = sends.iter().filter(|x| x.0 == k).map(|x| x.1).collect();
            assert!(
                own.windows(2).all(|w| (w[1] - w[0]).abs_diff(142_857_143) <= 1),
                "1/7 s apart"
            );
        }
        let mut done = s;
        while done.pop_due(u64::MAX).is_some() {}
        assert_eq!(done.next_due_ns(), None, "nothing is due after the window");
        // 10 senders at 300/s (a period of 3,333,333.3 ns) for 10 s: exactly
        // 30,000 sends, none lost or gained to rounding.
        let s = Schedule::new(300.0, 10, Duration::from_secs(10));
        assert_eq!((s.total(), s.offered_per_sec().round()), (30_000, 3000.0));
        assert_eq!(s.due_ns(29_999), 9_999_666_667);
        // A fractional rate: one send per sender every 2 s.
        let slow = Schedule::new(0.5, 2, Duration::from_secs(5));
        assert_eq!(
            all_due(slow),
            [
                (0, 0),
                (1, 1_000_000_000),
                (0, 2_000_000_000),
                (1, 3_000_000_000),
                (0, 4_000_000_000)
            ]
        );
    }
}
