//! The rendezvous store's wire protocol: requests, responses, framing and bounds.
//!
//! The operations are those of torch.distributed's `TCPStore` (`set`, blocking `get`, atomic
//! `add`, `check`, `wait`, `delete_key`); the framing follows dmsc's wire rules: every frame
//! starts with a fixed header whose length field is checked against hard limits *before* a
//! byte of the body is awaited, and decoders return errors, never panic.
//!
//! ```text
//! frame  = magic u32 LE ("DMSS" on the wire) | version u8 | kind u8 | body_len u32 LE | body
//! key    = len u16 LE (<= 1024) | UTF-8 bytes
//! value  = len u32 LE (<= 16 MiB) | bytes
//! keys   = count u32 LE (<= 4096) | key*
//!
//! request  kind  body                      response  kind  body
//! Set      0x01  key value                 Ok        0x81  (empty)
//! Get      0x02  key timeout_ms:u64        Value     0x82  value
//! Add      0x03  key delta:i64             Counter   0x83  i64
//! Check    0x04  keys                      Bool      0x84  u8 (0 or 1)
//! Wait     0x05  keys timeout_ms:u64       Timeout   0x85  keys (the missing ones)
//! Delete   0x06  key                       Error     0x86  UTF-8 message (<= 4096 bytes)
//! ```
//!
//! All integers are little-endian. A frame is at most [`MAX_FRAME_LEN`] bytes. The decoders
//! ([`Request::decode`], [`Response::decode`]) take whatever bytes have arrived and return
//! `Ok(Some((message, consumed)))`, `Ok(None)` when more bytes are needed, or
//! [`Error::Protocol`]. A bad magic, version, kind or length is reported as soon as its bytes
//! are present, so a reader never waits for (or allocates) an announced body it would reject.
//! Decoding allocates at most the body's length. These properties make the decoders the
//! target of the store fuzzer.

use crate::codec::Reader;
use crate::error::{Error, Result};

/// The four magic bytes that open every frame.
pub const MAGIC: [u8; 4] = *b"DMSS";
/// Protocol version spoken by this build.
pub const VERSION: u8 = 1;
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 10;
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Longest value, in bytes (16 MiB).
pub const MAX_VALUE_LEN: usize = 16 << 20;
/// Most keys in one `Check`, `Wait` or `Timeout`.
pub const MAX_KEYS: usize = 4096;
/// Longest error message in a response, in bytes (longer ones are truncated when encoding).
pub const MAX_ERROR_LEN: usize = 4096;
/// Longest frame, header included (17 MiB).
pub const MAX_FRAME_LEN: usize = 17 << 20;

mod kind {
    pub const SET: u8 = 0x01;
    pub const GET: u8 = 0x02;
    pub const ADD: u8 = 0x03;
    pub const CHECK: u8 = 0x04;
    pub const WAIT: u8 = 0x05;
    pub const DELETE: u8 = 0x06;
    pub const OK: u8 = 0x81;
    pub const VALUE: u8 = 0x82;
    pub const COUNTER: u8 = 0x83;
    pub const BOOL: u8 = 0x84;
    pub const TIMEOUT: u8 = 0x85;
    pub const ERROR: u8 = 0x86;
}

/// A client's request to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Store `value` under `key`, replacing any previous value; answered by `Ok`.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Wait up to `timeout_ms` for `key` to exist; answered by `Value` or `Timeout`.
    Get {
        /// The key.
        key: String,
        /// Longest wait, in milliseconds (0: do not wait).
        timeout_ms: u64,
    },
    /// Add `delta` to the counter at `key` (absent counts as 0); answered by `Counter` with the
    /// new value. Counters are stored as decimal text, as in torch's `TCPStore`.
    Add {
        /// The key.
        key: String,
        /// The increment.
        delta: i64,
    },
    /// Do all `keys` exist? Answered by `Bool`, without waiting.
    Check {
        /// The keys.
        keys: Vec<String>,
    },
    /// Wait up to `timeout_ms` for all `keys` to exist; answered by `Ok` or `Timeout`.
    Wait {
        /// The keys.
        keys: Vec<String>,
        /// Longest wait, in milliseconds.
        timeout_ms: u64,
    },
    /// Remove `key`; answered by `Bool` (whether it existed).
    Delete {
        /// The key.
        key: String,
    },
}

/// The store's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Done.
    Ok,
    /// The value of a `Get`.
    Value(Vec<u8>),
    /// The new value of an `Add`.
    Counter(i64),
    /// The answer of a `Check` or `Delete`.
    Bool(bool),
    /// A `Get` or `Wait` ran out of time; these keys never appeared.
    Timeout {
        /// The keys still missing at the deadline.
        missing: Vec<String>,
    },
    /// The request failed; the message says why.
    Error(String),
}

// ---------------------------------------------------------------------------------------------
// Encoding.

/// Appends a frame to a buffer: header first, body length patched in at the end.
struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn new(kind: u8) -> Writer {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(kind);
        out.extend_from_slice(&[0; 4]);
        Writer { out }
    }

    fn key(&mut self, key: &str) -> Result<()> {
        if key.len() > MAX_KEY_LEN {
            return Err(Error::invalid(format!(
                "store key of {} bytes is longer than the limit of {MAX_KEY_LEN} (key starts {:?})",
                key.len(),
                prefix(key)
            )));
        }
        self.out
            .extend_from_slice(&(key.len() as u16).to_le_bytes());
        self.out.extend_from_slice(key.as_bytes());
        Ok(())
    }

    fn keys(&mut self, keys: &[String]) -> Result<()> {
        if keys.len() > MAX_KEYS {
            return Err(Error::invalid(format!(
                "{} store keys in one request exceed the limit of {MAX_KEYS}",
                keys.len()
            )));
        }
        self.out
            .extend_from_slice(&(keys.len() as u32).to_le_bytes());
        keys.iter().try_for_each(|k| self.key(k))
    }

    fn value(&mut self, value: &[u8]) -> Result<()> {
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::invalid(format!(
                "store value of {} bytes is longer than the limit of {MAX_VALUE_LEN}",
                value.len()
            )));
        }
        self.out
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.out.extend_from_slice(value);
        Ok(())
    }

    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    fn finish(mut self) -> Result<Vec<u8>> {
        let body = self.out.len() - HEADER_LEN;
        if self.out.len() > MAX_FRAME_LEN {
            return Err(Error::invalid(format!(
                "store frame of {} bytes is longer than the limit of {MAX_FRAME_LEN}",
                self.out.len()
            )));
        }
        self.out[6..10].copy_from_slice(&(body as u32).to_le_bytes());
        Ok(self.out)
    }
}

/// The first few characters of a key, for error messages.
fn prefix(key: &str) -> &str {
    let mut end = key.len().min(64);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

impl Request {
    /// Encode as one frame. Fails with [`Error::InvalidArgument`] when a key, value or key
    /// list exceeds the protocol's limits.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w;
        match self {
            Request::Set { key, value } => {
                w = Writer::new(kind::SET);
                w.key(key)?;
                w.value(value)?;
            }
            Request::Get { key, timeout_ms } => {
                w = Writer::new(kind::GET);
                w.key(key)?;
                w.u64(*timeout_ms);
            }
            Request::Add { key, delta } => {
                w = Writer::new(kind::ADD);
                w.key(key)?;
                w.u64(*delta as u64);
            }
            Request::Check { keys } => {
                w = Writer::new(kind::CHECK);
                w.keys(keys)?;
            }
            Request::Wait { keys, timeout_ms } => {
                w = Writer::new(kind::WAIT);
                w.keys(keys)?;
                w.u64(*timeout_ms);
            }
            Request::Delete { key } => {
                w = Writer::new(kind::DELETE);
                w.key(key)?;
            }
        }
        w.finish()
    }

    /// Decode one request from the front of `buf`; see the [module docs](self).
    pub fn decode(buf: &[u8]) -> Result<Option<(Request, usize)>> {
        let Some((kind, body)) = split_frame(buf, true)? else {
            return Ok(None);
        };
        let mut r = Reader::new(body, "frame body");
        let req = match kind {
            kind::SET => Request::Set {
                key: r.key()?,
                value: r.value()?,
            },
            kind::GET => Request::Get {
                key: r.key()?,
                timeout_ms: r.u64()?,
            },
            kind::ADD => Request::Add {
                key: r.key()?,
                delta: r.u64()? as i64,
            },
            kind::CHECK => Request::Check { keys: r.keys()? },
            kind::WAIT => Request::Wait {
                keys: r.keys()?,
                timeout_ms: r.u64()?,
            },
            kind::DELETE => Request::Delete { key: r.key()? },
            other => return Err(bad_kind(other, true)),
        };
        r.finish()?;
        Ok(Some((req, HEADER_LEN + body.len())))
    }

    /// The operation's name (`set`, `get`, ...), for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Set { .. } => "set",
            Request::Get { .. } => "get",
            Request::Add { .. } => "add",
            Request::Check { .. } => "check",
            Request::Wait { .. } => "wait",
            Request::Delete { .. } => "delete",
        }
    }
}

impl Response {
    /// Encode as one frame. An error message longer than [`MAX_ERROR_LEN`] is truncated;
    /// an oversized value or key list fails with [`Error::InvalidArgument`].
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w;
        match self {
            Response::Ok => w = Writer::new(kind::OK),
            Response::Value(v) => {
                w = Writer::new(kind::VALUE);
                w.value(v)?;
            }
            Response::Counter(c) => {
                w = Writer::new(kind::COUNTER);
                w.u64(*c as u64);
            }
            Response::Bool(b) => {
                w = Writer::new(kind::BOOL);
                w.out.push(u8::from(*b));
            }
            Response::Timeout { missing } => {
                w = Writer::new(kind::TIMEOUT);
                w.keys(missing)?;
            }
            Response::Error(msg) => {
                w = Writer::new(kind::ERROR);
                let mut end = msg.len().min(MAX_ERROR_LEN);
                while !msg.is_char_boundary(end) {
                    end -= 1;
                }
                w.out.extend_from_slice(&msg.as_bytes()[..end]);
            }
        }
        w.finish()
    }

    /// Decode one response from the front of `buf`; see the [module docs](self).
    pub fn decode(buf: &[u8]) -> Result<Option<(Response, usize)>> {
        let Some((kind, body)) = split_frame(buf, false)? else {
            return Ok(None);
        };
        let mut r = Reader::new(body, "frame body");
        let resp = match kind {
            kind::OK => Response::Ok,
            kind::VALUE => Response::Value(r.value()?),
            kind::COUNTER => Response::Counter(r.u64()? as i64),
            kind::BOOL => match r.take(1)?[0] {
                0 => Response::Bool(false),
                1 => Response::Bool(true),
                b => return Err(Error::protocol(format!("bool byte {b} is not 0 or 1"))),
            },
            kind::TIMEOUT => Response::Timeout { missing: r.keys()? },
            kind::ERROR => {
                if body.len() > MAX_ERROR_LEN {
                    return Err(Error::protocol(format!(
                        "error message of {} bytes exceeds the limit of {MAX_ERROR_LEN}",
                        body.len()
                    )));
                }
                Response::Error(r.utf8(body.len(), "error message")?)
            }
            other => return Err(bad_kind(other, false)),
        };
        r.finish()?;
        Ok(Some((resp, HEADER_LEN + body.len())))
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding.

fn is_request_kind(k: u8) -> bool {
    (kind::SET..=kind::DELETE).contains(&k)
}

fn is_response_kind(k: u8) -> bool {
    (kind::OK..=kind::ERROR).contains(&k)
}

fn bad_kind(k: u8, request: bool) -> Error {
    let want = if request { "request" } else { "response" };
    if is_request_kind(k) || is_response_kind(k) {
        Error::protocol(format!("frame kind {k:#04x} is not a {want}"))
    } else {
        Error::protocol(format!("unknown frame kind {k:#04x}"))
    }
}

/// Check the header as far as `buf` reaches; once the whole frame is present, return its kind
/// and body. Errors as soon as a present byte is wrong.
fn split_frame(buf: &[u8], request: bool) -> Result<Option<(u8, &[u8])>> {
    let (body_len, kind) = match frame_header(buf, request)? {
        Some(h) => h,
        None => return Ok(None),
    };
    match buf.get(HEADER_LEN..HEADER_LEN + body_len) {
        Some(body) => Ok(Some((kind, body))),
        None => Ok(None),
    }
}

/// Validate the header bytes present in `buf`. Returns `(body_len, kind)` once all
/// [`HEADER_LEN`] bytes are there.
fn frame_header(buf: &[u8], request: bool) -> Result<Option<(usize, u8)>> {
    let n = buf.len().min(MAGIC.len());
    if buf[..n] != MAGIC[..n] {
        return Err(Error::protocol(format!(
            "bad magic {:02x?}: the peer does not speak the dmsc store protocol",
            &buf[..n]
        )));
    }
    if let Some(&v) = buf.get(4) {
        if v != VERSION {
            return Err(Error::protocol(format!(
                "store protocol version {v} is not supported (this build speaks version \
                 {VERSION}); are all ranks running the same dmsc?"
            )));
        }
    }
    let Some(&k) = buf.get(5) else {
        return Ok(None);
    };
    let ok = if request {
        is_request_kind(k)
    } else {
        is_response_kind(k)
    };
    if !ok {
        return Err(bad_kind(k, request));
    }
    let Some(len) = buf.get(6..HEADER_LEN) else {
        return Ok(None);
    };
    let mut b = [0u8; 4];
    b.copy_from_slice(len);
    let body_len = u32::from_le_bytes(b) as usize;
    if body_len > MAX_FRAME_LEN - HEADER_LEN {
        return Err(Error::protocol(format!(
            "frame body of {body_len} bytes exceeds the limit of {} bytes",
            MAX_FRAME_LEN - HEADER_LEN
        )));
    }
    Ok(Some((body_len, k)))
}

/// Total length (header included) of the frame that starts `buf`, once its header is present
/// and valid: lets a reader size its buffer exactly. `request` selects which kinds are
/// acceptable.
pub fn frame_len(buf: &[u8], request: bool) -> Result<Option<usize>> {
    Ok(frame_header(buf, request)?.map(|(body, _)| HEADER_LEN + body))
}

/// The protocol's own fields (text, keys, values), read with the codec's [`Reader`].
trait Fields: Sized {
    fn utf8(&mut self, n: usize, what: &str) -> Result<String>;
    fn key(&mut self) -> Result<String>;
    fn keys(&mut self) -> Result<Vec<String>>;
    fn value(&mut self) -> Result<Vec<u8>>;
    fn finish(self) -> Result<()>;
}

impl Fields for Reader<'_> {
    fn utf8(&mut self, n: usize, what: &str) -> Result<String> {
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| Error::protocol(format!("{what} is not UTF-8: {e}")))
    }

    fn key(&mut self) -> Result<String> {
        let n = self.u16()? as usize;
        if n > MAX_KEY_LEN {
            return Err(Error::protocol(format!(
                "key of {n} bytes exceeds the limit of {MAX_KEY_LEN}"
            )));
        }
        self.utf8(n, "key")
    }

    fn keys(&mut self) -> Result<Vec<String>> {
        let n = self.u32()? as usize;
        // Each key takes at least its 2-byte length, so a count the body cannot hold is
        // rejected before anything is allocated for it.
        if n > MAX_KEYS || n * 2 > self.remaining() {
            return Err(Error::protocol(format!(
                "key count {n} exceeds the limit of {MAX_KEYS} or the frame's length"
            )));
        }
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            keys.push(self.key()?);
        }
        Ok(keys)
    }

    fn value(&mut self) -> Result<Vec<u8>> {
        let n = self.u32()? as usize;
        if n > MAX_VALUE_LEN {
            return Err(Error::protocol(format!(
                "value of {n} bytes exceeds the limit of {MAX_VALUE_LEN}"
            )));
        }
        Ok(self.take(n)?.to_vec())
    }

    fn finish(self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(Error::protocol(format!(
                "{} unexpected trailing bytes in a frame body of {}",
                self.remaining(),
                self.position() + self.remaining()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests() -> Vec<Request> {
        vec![
            Request::Set {
                key: "a/0".into(),
                value: b"hello".to_vec(),
            },
            Request::Set {
                key: String::new(),
                value: Vec::new(),
            },
            Request::Get {
                key: "k\u{e9}y".into(),
                timeout_ms: u64::MAX,
            },
            Request::Add {
                key: "c".into(),
                delta: -5,
            },
            Request::Check {
                keys: vec!["x".into(), "y".into()],
            },
            Request::Wait {
                keys: vec![],
                timeout_ms: 7,
            },
            Request::Delete { key: "d".into() },
        ]
    }

    fn responses() -> Vec<Response> {
        vec![
            Response::Ok,
            Response::Value(vec![1, 2, 3]),
            Response::Counter(i64::MIN),
            Response::Bool(true),
            Response::Bool(false),
            Response::Timeout {
                missing: vec!["p/3".into()],
            },
            Response::Error("no such thing".into()),
        ]
    }

    type Decoder<M> = fn(&[u8]) -> Result<Option<(M, usize)>>;

    /// Every prefix decodes to `None`, the whole frame to the message, and trailing bytes are
    /// left alone.
    fn check_frame<M: PartialEq + std::fmt::Debug>(msg: &M, frame: &[u8], decode: Decoder<M>) {
        for cut in 0..frame.len() {
            assert_eq!(decode(&frame[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (m, used) = decode(frame).unwrap().unwrap();
        assert_eq!((&m, used), (msg, frame.len()));
        let mut more = frame.to_vec();
        more.extend_from_slice(frame);
        assert_eq!(decode(&more).unwrap().unwrap().1, frame.len());
        assert_eq!(
            frame_len(frame, is_request_kind(frame[5])).unwrap(),
            Some(used)
        );
    }

    #[test]
    fn round_trip_and_truncation() {
        for r in requests() {
            check_frame(&r, &r.encode().unwrap(), Request::decode);
        }
        for r in responses() {
            check_frame(&r, &r.encode().unwrap(), Response::decode);
        }
    }

    #[test]
    fn requests_and_responses_are_not_confused() {
        let f = Request::Delete { key: "d".into() }.encode().unwrap();
        let e = Response::decode(&f).unwrap_err().to_string();
        assert!(e.contains("is not a response"), "{e}");
        let f = Response::Ok.encode().unwrap();
        assert!(Request::decode(&f).is_err());
    }

    #[test]
    fn bad_headers_fail_early() {
        assert!(Request::decode(b"GET / HTTP/1.1").is_err());
        assert!(Request::decode(b"D").unwrap().is_none());
        assert!(Request::decode(b"DX").is_err());
        assert!(Request::decode(b"DMSS\x02")
            .unwrap_err()
            .to_string()
            .contains("version 2"));
        assert!(Request::decode(b"DMSS\x01\x07").is_err());
        // A huge announced length is refused before its body is awaited.
        let e = Request::decode(b"DMSS\x01\x01\xff\xff\xff\xff").unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
    }

    #[test]
    fn bodies_are_checked() {
        let mut f = Request::Check {
            keys: vec!["a".into()],
        }
        .encode()
        .unwrap();
        f[10] = 200; // key count 200 in a 7-byte body
        assert!(Request::decode(&f).is_err());

        let mut f = Request::Delete { key: "ab".into() }.encode().unwrap();
        f[12] = 0xff; // invalid UTF-8
        assert!(Request::decode(&f)
            .unwrap_err()
            .to_string()
            .contains("UTF-8"));

        let mut f = Request::Delete { key: "ab".into() }.encode().unwrap();
        f.push(0);
        f[6] += 1; // one trailing byte in the body
        assert!(Request::decode(&f)
            .unwrap_err()
            .to_string()
            .contains("trailing"));

        let mut f = Response::Bool(true).encode().unwrap();
        f[10] = 2;
        assert!(Response::decode(&f).is_err());
    }

    #[test]
    fn limits_are_enforced_when_encoding() {
        let long = "k".repeat(MAX_KEY_LEN + 1);
        assert!(Request::Delete { key: long }.encode().is_err());
        let keys = vec![String::new(); MAX_KEYS + 1];
        assert!(Request::Check { keys }.encode().is_err());
        let big = Request::Set {
            key: "k".into(),
            value: vec![0; MAX_VALUE_LEN],
        };
        let f = big.encode().unwrap();
        assert!(f.len() <= MAX_FRAME_LEN);
        assert_eq!(Request::decode(&f).unwrap().unwrap().0, big);
        let too_big = Request::Set {
            key: "k".into(),
            value: vec![0; MAX_VALUE_LEN + 1],
        };
        assert!(too_big.encode().is_err());
        let msg = "\u{e9}".repeat(MAX_ERROR_LEN);
        let f = Response::Error(msg).encode().unwrap();
        match Response::decode(&f).unwrap().unwrap().0 {
            Response::Error(m) => assert!(m.len() <= MAX_ERROR_LEN),
            other => panic!("{other:?}"),
        }
    }

    /// xorshift64*: deterministic noise without a dependency.
    fn noise(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn random_and_mutated_bytes_never_panic() {
        let mut s = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let len = (noise(&mut s) % 64) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| noise(&mut s) as u8).collect();
            // Half the time, start with a valid header prefix so the body parsers are reached.
            if noise(&mut s) & 1 == 0 && len >= 6 {
                buf[..5].copy_from_slice(b"DMSS\x01");
            }
            let _ = Request::decode(&buf);
            let _ = Response::decode(&buf);
        }
        let frames: Vec<Vec<u8>> = requests()
            .iter()
            .map(|r| r.encode().unwrap())
            .chain(responses().iter().map(|r| r.encode().unwrap()))
            .collect();
        for f in &frames {
            for i in 0..f.len() {
                for x in [0x01u8, 0x80, 0xff] {
                    let mut g = f.clone();
                    g[i] ^= x;
                    if let Ok(Some((_, used))) = Request::decode(&g) {
                        assert!(used <= g.len());
                    }
                    if let Ok(Some((_, used))) = Response::decode(&g) {
                        assert!(used <= g.len());
                    }
                }
            }
        }
    }
}
