//! The I/O side of connection authentication ([`dmsc_core::auth`]): running the exchange on a
//! blocking socket with a deadline, fresh nonces from the kernel, the once-per-process warning
//! when no secret is set, and a rate limit on the log lines about refused strangers.

use dmsc_core::auth::{self, Handshake, Message, Purpose, Refusal, Secret, Side, MSG_LEN};
use dmsc_core::error::{Error, Result};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// How long a stranger may take to authenticate before an acceptor drops it, so a silent
/// connection cannot hold a slot.
pub const ACCEPT_DEADLINE: Duration = Duration::from_secs(5);

/// Why an exchange on a socket did not complete.
#[derive(Debug)]
pub enum AuthError {
    /// The acceptor turned the connection away (at capacity); worth another try.
    Refused(Refusal),
    /// The peer closed or reset the connection, or the socket failed.
    Closed(String),
    /// The deadline passed.
    TimedOut,
    /// The peer sent something that is not a dmsc authentication message.
    Garbled(Error),
    /// The peer speaks the protocol but failed it: wrong secret, a secret on one end only.
    Rejected(Error),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Refused(r) => write!(f, "refused: {r}"),
            AuthError::Closed(why) => write!(f, "connection closed during authentication: {why}"),
            AuthError::TimedOut => write!(f, "no authentication within the deadline"),
            AuthError::Garbled(e) | AuthError::Rejected(e) => write!(f, "{e}"),
        }
    }
}

/// A blocking byte stream with per-call timeouts: the sockets authentication runs over (TCP
/// between hosts, Unix sockets between ranks of one host).
pub trait TimedStream: Read + Write {
    /// `set_read_timeout` of the socket.
    fn read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    /// `set_write_timeout` of the socket.
    fn write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}

impl TimedStream for TcpStream {
    fn read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)
    }
    fn write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_write_timeout(t)
    }
}

impl TimedStream for UnixStream {
    fn read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)
    }
    fn write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_write_timeout(t)
    }
}

/// Run one exchange on a blocking `stream`, as `side`, until `deadline`. On success the
/// stream's read timeout is cleared; on failure the caller should close the stream.
pub fn handshake<S: TimedStream>(
    stream: &mut S,
    secret: Option<&Secret>,
    purpose: Purpose,
    side: Side,
    context: u64,
    deadline: Instant,
) -> std::result::Result<(), AuthError> {
    let nonce = random_bytes::<32>().map_err(|e| AuthError::Closed(e.to_string()))?;
    let mut hs = Handshake::new(secret, purpose, side, context, nonce);
    if secret.is_none() {
        warn_unauthenticated();
    }
    write_msg(stream, &hs.challenge(), deadline)?;
    let msg = read_msg(stream, deadline)?;
    if let Ok(Message::Refused(r)) = auth::decode(&msg) {
        return Err(AuthError::Refused(r));
    }
    let proof = hs.on_challenge(&msg).map_err(|e| classify(&msg, e))?;
    if let Some(proof) = proof {
        write_msg(stream, &proof, deadline)?;
        let msg = read_msg(stream, deadline)?;
        hs.on_proof(&msg).map_err(|e| classify(&msg, e))?;
    }
    stream
        .read_timeout(None)
        .map_err(|e| AuthError::Closed(e.to_string()))
}

/// Garbage (not our protocol at all) or a failed proof.
fn classify(msg: &[u8; MSG_LEN], e: Error) -> AuthError {
    if auth::decode(msg).is_err() {
        AuthError::Garbled(e)
    } else {
        AuthError::Rejected(e)
    }
}

/// Tell a connection why it is turned away, best effort and without blocking for long.
pub fn refuse<S: TimedStream>(stream: &mut S, why: Refusal) {
    let _ = stream.write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&Message::Refused(why).encode());
}

fn time_left(deadline: Instant) -> std::result::Result<Duration, AuthError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(AuthError::TimedOut);
    }
    Ok(left)
}

fn io_error(e: io::Error) -> AuthError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => AuthError::TimedOut,
        io::ErrorKind::UnexpectedEof => AuthError::Closed("the peer closed the connection".into()),
        _ => AuthError::Closed(e.to_string()),
    }
}

fn write_msg<S: TimedStream>(
    stream: &mut S,
    msg: &[u8; MSG_LEN],
    deadline: Instant,
) -> std::result::Result<(), AuthError> {
    stream
        .write_timeout(Some(time_left(deadline)?))
        .map_err(io_error)?;
    stream.write_all(msg).map_err(io_error)
}

/// Read one message, checking its first bytes as they arrive so garbage ends the exchange
/// at once.
fn read_msg<S: TimedStream>(
    stream: &mut S,
    deadline: Instant,
) -> std::result::Result<[u8; MSG_LEN], AuthError> {
    let mut b = [0u8; MSG_LEN];
    let mut have = 0;
    while have < MSG_LEN {
        stream
            .read_timeout(Some(time_left(deadline)?))
            .map_err(io_error)?;
        match stream.read(&mut b[have..]) {
            Ok(0) => return Err(AuthError::Closed("the peer closed the connection".into())),
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e)),
        }
        auth::check_prefix(&b[..have]).map_err(AuthError::Garbled)?;
    }
    Ok(b)
}

/// `N` bytes from the kernel's random source (`getrandom(2)`, else `/dev/urandom`).
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    let mut got = 0;
    while got < N {
        // SAFETY: the pointer and length describe the unfilled tail of `b`, which lives for
        // the whole call; getrandom(2) writes at most that many bytes.
        let n = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), N - got, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut b))
                .map_err(|e| Error::io("reading random bytes from /dev/urandom", &e))?;
            return Ok(b);
        }
        got += n as usize;
    }
    Ok(b)
}

/// A fresh random secret for a job, as 64 hex digits (what `dmscrun` puts in `DMSC_SECRET`).
pub fn new_secret_hex() -> Result<String> {
    Ok(random_bytes::<32>()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Say once per process that connections are not authenticated.
pub fn warn_unauthenticated() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::warn!(
            target: dmsc_core::subsys::INIT,
            "no DMSC_SECRET set: connections are not authenticated"
        );
    });
}

/// Log lines allowed in a burst, and the window after which the budget refills.
const LOG_BURST: u32 = 20;
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Log a line about a refused connection (a warning of subsystem `target`), at most [`LOG_BURST`] per
/// [`LOG_WINDOW`] per process (a flood of strangers must not flood the log); the number of
/// lines left out is reported with the next line printed.
pub fn log_refusal(target: &str, line: fmt::Arguments<'_>) {
    static STATE: Mutex<Option<(Instant, u32, u64)>> = Mutex::new(None);
    let mut st = STATE.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    let (start, printed, dropped) = st.get_or_insert((now, 0, 0));
    if now.duration_since(*start) >= LOG_WINDOW {
        (*start, *printed) = (now, 0);
    }
    if *printed >= LOG_BURST {
        *dropped += 1;
        return;
    }
    *printed += 1;
    if *dropped > 0 {
        log::warn!(target: target, "{line} ({dropped} similar lines were left out)");
        *dropped = 0;
    } else {
        log::warn!(target: target, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (c, l.accept().unwrap().0)
    }

    fn run(
        a: Option<&'static str>,
        b: Option<&'static str>,
    ) -> (
        std::result::Result<(), AuthError>,
        std::result::Result<(), AuthError>,
    ) {
        let (mut c, mut s) = pair();
        let deadline = Instant::now() + Duration::from_secs(5);
        let t = thread::spawn(move || {
            let sec = b.map(|x| Secret::new(x.as_bytes()).unwrap());
            handshake(
                &mut s,
                sec.as_ref(),
                Purpose::Store,
                Side::Acceptor,
                0,
                deadline,
            )
        });
        let sec = a.map(|x| Secret::new(x.as_bytes()).unwrap());
        let rc = handshake(
            &mut c,
            sec.as_ref(),
            Purpose::Store,
            Side::Connector,
            0,
            deadline,
        );
        (rc, t.join().unwrap())
    }

    #[test]
    fn sockets_authenticate_and_tell_failures_apart() {
        let (c, a) = run(Some("k"), Some("k"));
        c.unwrap();
        a.unwrap();
        let (c, a) = run(None, None);
        c.unwrap();
        a.unwrap();
        let (c, a) = run(Some("k"), Some("x"));
        assert!(matches!(c, Err(AuthError::Rejected(_))), "{c:?}");
        assert!(matches!(a, Err(AuthError::Rejected(_))), "{a:?}");
        let (c, _) = run(None, Some("x"));
        assert!(c.unwrap_err().to_string().contains("secret mismatch"));
    }

    #[test]
    fn garbage_silence_and_refusals() {
        let deadline = || Instant::now() + Duration::from_millis(300);
        let (mut c, mut s) = pair();
        s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
        let e = handshake(&mut c, None, Purpose::Store, Side::Connector, 0, deadline());
        assert!(matches!(e, Err(AuthError::Garbled(_))), "{e:?}");
        let (mut c, _s) = pair();
        let e = handshake(&mut c, None, Purpose::Store, Side::Connector, 0, deadline());
        assert!(matches!(e, Err(AuthError::TimedOut)), "{e:?}");
        let (mut c, mut s) = pair();
        refuse(&mut s, Refusal::TooManyConnections(3));
        let e = handshake(&mut c, None, Purpose::Store, Side::Connector, 0, deadline());
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("too many connections (3)"));
        let (mut c, s) = pair();
        drop(s);
        let e = handshake(&mut c, None, Purpose::Store, Side::Connector, 0, deadline());
        assert!(matches!(e, Err(AuthError::Closed(_))), "{e:?}");
    }

    #[test]
    fn random_bytes_differ() {
        assert_ne!(random_bytes::<32>().unwrap(), random_bytes::<32>().unwrap());
        let h = new_secret_hex().unwrap();
        assert_eq!(h.len(), 64);
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
