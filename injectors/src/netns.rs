//! Running code inside a named network namespace.
//!
//! `setns(2)` moves only the calling *thread*. So every call here spawns a fresh thread, which
//! enters the namespace, runs the closure and exits. A thread that has left the agent's own
//! namespace is never reused for other work, and the caller's thread never moves.
//!
//! A socket belongs to the namespace it was created in, even after its thread has gone.
//! [`connect_tcp_in_netns`] and the netlink rule table rely on that: they open their socket on
//! the namespaced thread and use it afterwards.
//!
//! The namespace directory (normally [`DEFAULT_NETNS_DIR`], where `ip netns add` puts its
//! files) is always passed in, so tests can point it elsewhere, e.g. at `/proc/self/ns`.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

use crate::{Error, Result};

/// Where `ip netns add` creates its namespace files.
pub const DEFAULT_NETNS_DIR: &str = "/run/netns";

/// Runs `f` on a new thread that has entered the network namespace `netns_dir/name`, and
/// returns what `f` returned.
///
/// The caller's thread stays where it is. Whatever `f` creates (sockets, netlink connections)
/// belongs to the namespace and stays there after the thread has exited. The call blocks until
/// `f` returns (a thread spawn and a `setns` cost some 25 µs), so async callers with long
/// closures should go through `spawn_blocking`.
///
/// # Errors
/// [`Error::EnterNetns`] if the namespace cannot be opened or entered. When the namespace does
/// not exist, its `source` has [`io::ErrorKind::NotFound`] (see [`is_netns_gone`]). A `name`
/// that is empty, `.`, `..` or contains `/` is refused with [`io::ErrorKind::InvalidInput`].
///
/// # Panics
/// If `f` panics, the panic is resumed on the caller's thread.
pub fn run_in_netns<T: Send + 'static>(
    netns_dir: &Path,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    spawn_in_netns(netns_dir, name, f)?.join()
}

/// Opens a TCP connection to `addr` from inside the network namespace `netns_dir/name`,
/// waiting at most `timeout` for it to be set up.
///
/// The outer result is about the namespace; the inner one is the connection attempt, so a
/// refused or prohibited connection is an `Ok(Err(_))`. The stream keeps belonging to the
/// namespace after this returns.
///
/// # Errors
/// As [`run_in_netns`].
pub fn connect_tcp_in_netns(
    netns_dir: &Path,
    name: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<io::Result<TcpStream>> {
    run_in_netns(netns_dir, name, move || {
        TcpStream::connect_timeout(&addr, timeout)
    })
}

/// Whether `error` says that a namespace does not exist (anymore). Callers reverting a fault
/// treat this as "nothing left to revert".
pub fn is_netns_gone(error: &Error) -> bool {
    matches!(error, Error::EnterNetns { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

/// A thread that is running a closure inside a network namespace; see [`spawn_in_netns`].
pub(crate) struct NetnsThread<T> {
    netns: String,
    handle: JoinHandle<io::Result<T>>,
}

impl<T> NetnsThread<T> {
    /// Waits for the closure and returns its value.
    ///
    /// # Errors
    /// [`Error::EnterNetns`] if the thread could not enter the namespace.
    ///
    /// # Panics
    /// Resumes the closure's panic, if it panicked.
    pub(crate) fn join(self) -> Result<T> {
        match self.handle.join() {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(Error::EnterNetns {
                netns: self.netns,
                source,
            }),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Starts `f` on a new thread inside the namespace `netns_dir/name` without waiting for it, so
/// that several namespaces can be worked on in parallel. The namespace file is opened on the
/// caller's thread, so a missing namespace is reported here rather than by
/// [`NetnsThread::join`].
///
/// # Errors
/// As [`run_in_netns`].
pub(crate) fn spawn_in_netns<T: Send + 'static>(
    netns_dir: &Path,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<NetnsThread<T>> {
    let enter_error = |source| Error::EnterNetns {
        netns: name.to_owned(),
        source,
    };
    let file = open_netns(netns_dir, name).map_err(enter_error)?;
    let handle = thread::Builder::new()
        .name(format!("netns {name}"))
        .spawn(move || {
            enter_netns(&file)?;
            drop(file);
            Ok(f())
        })
        .map_err(enter_error)?;
    Ok(NetnsThread {
        netns: name.to_owned(),
        handle,
    })
}

/// Opens the namespace file `netns_dir/name` (close-on-exec, like every `std` file).
fn open_netns(netns_dir: &Path, name: &str) -> io::Result<File> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a namespace name (it must be a plain file name)"),
        ));
    }
    File::open(netns_dir.join(name))
}

/// Moves the calling thread into the network namespace behind `file`. Needs `CAP_SYS_ADMIN`.
fn enter_netns(file: &File) -> io::Result<()> {
    setns(file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1))
                == Some("0")
        })
    }

    #[test]
    fn a_missing_namespace_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = run_in_netns(dir.path(), "fl-nope", || ()).unwrap_err();
        assert!(is_netns_gone(&err), "{err}");
        assert!(err.to_string().contains("fl-nope"), "{err}");
        assert!(matches!(
            connect_tcp_in_netns(
                dir.path(),
                "fl-nope",
                (Ipv4Addr::LOCALHOST, 1).into(),
                Duration::from_millis(100)
            ),
            Err(Error::EnterNetns { .. })
        ));
    }

    #[test]
    fn names_that_are_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["", ".", "..", "../net", "a/b"] {
            let err = run_in_netns(dir.path(), name, || ()).unwrap_err();
            match err {
                Error::EnterNetns { source, .. } => {
                    assert_eq!(source.kind(), io::ErrorKind::InvalidInput, "{name:?}");
                }
                other => panic!("{name:?}: unexpected {other}"),
            }
        }
    }

    #[test]
    fn a_file_that_is_no_namespace_cannot_be_entered() {
        if !is_root() {
            eprintln!("skipped: setns needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plain"), b"").unwrap();
        let err = run_in_netns(dir.path(), "plain", || ()).unwrap_err();
        assert!(matches!(err, Error::EnterNetns { .. }), "{err}");
        assert!(!is_netns_gone(&err), "{err}");
    }

    #[test]
    fn runs_in_our_own_namespace_through_proc() {
        if !is_root() {
            eprintln!("skipped: setns needs root");
            return;
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let ns = Path::new("/proc/self/ns");
        let caller = thread::current().id();
        let ran_on = run_in_netns(ns, "net", || thread::current().id()).unwrap();
        assert_ne!(ran_on, caller, "must run on a fresh thread");
        let stream = connect_tcp_in_netns(ns, "net", addr, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), addr);
    }

    #[test]
    fn a_panic_in_the_closure_reaches_the_caller() {
        if !is_root() {
            eprintln!("skipped: setns needs root");
            return;
        }
        let caught = std::panic::catch_unwind(|| {
            run_in_netns(Path::new("/proc/self/ns"), "net", || panic!("boom"))
        })
        .unwrap_err();
        assert_eq!(caught.downcast_ref::<&str>(), Some(&"boom"));
    }
}
