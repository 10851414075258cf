//! Recognising a shortage of this host's resources (file descriptors,
//! kernel memory, socket buffers) in an error.
//!
//! Such an error says nothing about the instance or the destination: the
//! same export succeeds once descriptors are free again (a burst of
//! clients on a listener, another process hogging the system's table). An
//! export that meets one is therefore worth retrying, never a final
//! FAILED. Recognised by the OS error code of an `io::Error` anywhere in the
//! error's source chain, never by the wording of a message.

use std::error::Error;
use std::fmt;
use std::io;

/// Which resource ran short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortage {
    /// EMFILE: this process has as many descriptors open as RLIMIT_NOFILE allows.
    ProcessDescriptors,
    /// ENFILE: the system's table of open files is full.
    SystemDescriptors,
    /// ENOMEM: the kernel could not allocate memory for the call.
    Memory,
    /// ENOBUFS: no socket buffer space.
    Buffers,
}

impl fmt::Display for Shortage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Shortage::ProcessDescriptors => {
                "descriptor shortage: too many open files in this process (EMFILE)"
            }
            Shortage::SystemDescriptors => {
                "descriptor shortage: too many open files in the system (ENFILE)"
            }
            Shortage::Memory => "memory shortage: the system is out of memory (ENOMEM)",
            Shortage::Buffers => "buffer shortage: no buffer space available (ENOBUFS)",
        })
    }
}

impl Shortage {
    /// The shortage `e` reports, if it is one.
    pub fn of_io(e: &io::Error) -> Option<Shortage> {
        match e.raw_os_error() {
            Some(libc::EMFILE) => Some(Shortage::ProcessDescriptors),
            Some(libc::ENFILE) => Some(Shortage::SystemDescriptors),
            Some(libc::ENOMEM) => Some(Shortage::Memory),
            Some(libc::ENOBUFS) => Some(Shortage::Buffers),
            _ if e.kind() == io::ErrorKind::OutOfMemory => Some(Shortage::Memory),
            _ => None,
        }
    }

    /// The first shortage found in `e` or its sources.
    pub fn in_chain(e: &(dyn Error + 'static)) -> Option<Shortage> {
        let mut next = Some(e);
        while let Some(cur) = next {
            if let Some(io) = cur.downcast_ref::<io::Error>() {
                if let Some(s) = Shortage::of_io(io) {
                    return Some(s);
                }
                // `io::Error::source` skips the error it wraps (it answers
                // that error's source): look at the wrapped one itself.
                if let Some(inner) = io.get_ref()
                    && let Some(s) = Shortage::in_chain(inner)
                {
                    return Some(s);
                }
            }
            next = cur.source();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] io::Error);

    #[test]
    fn found_by_code_anywhere_in_the_chain() {
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(Shortage::of_io(&emfile), Some(Shortage::ProcessDescriptors));
        // Wrapped in another error, and inside an io::Error::other.
        let wrapped = Outer(io::Error::other(Outer(io::Error::from_raw_os_error(
            libc::ENFILE,
        ))));
        assert_eq!(
            Shortage::in_chain(&wrapped),
            Some(Shortage::SystemDescriptors)
        );
        // Not by wording: a message that says it is not one.
        let lookalike = Outer(io::Error::other("Too many open files (os error 24)"));
        assert_eq!(Shortage::in_chain(&lookalike), None);
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(Shortage::in_chain(&refused), None);
        assert!(
            Shortage::ProcessDescriptors
                .to_string()
                .contains("descriptor shortage")
        );
    }
}
