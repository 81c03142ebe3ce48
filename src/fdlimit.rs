//! The process's limit on open files: the usual soft limit of 1024 would cap
//! the server (or the load generator) at about 1000 connections, so both
//! raise it to what they will hold, as far as the hard limit allows.

/// Raises the soft limit to at least `wanted` descriptors if it is lower.
/// Returns the limit now in force, which may still be below `wanted`.
pub fn raise(wanted: u64) -> u64 {
    let wanted = wanted as libc::rlim_t;
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < wanted {
            let old = limit.rlim_cur;
            limit.rlim_cur = wanted.min(limit.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                limit.rlim_cur = old;
            }
        }
        limit.rlim_cur as u64
    }
}

#[cfg(test)]
mod tests {
    use super::raise;

    #[test]
    fn raises_the_soft_limit_as_far_as_the_hard_one_and_never_lowers_it() {
        let before = raise(0);
        assert!(before > 0);
        // SAFETY: getrlimit only writes the struct we pass.
        let hard = unsafe {
            let mut limit = std::mem::zeroed::<libc::rlimit>();
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
            limit.rlim_max as u64
        };
        let target = before.saturating_add(100).min(hard);
        assert_eq!(raise(target), target);
        assert_eq!(raise(1), target, "a lower wish leaves the limit alone");
        assert_eq!(raise(u64::MAX), hard);
    }
}
