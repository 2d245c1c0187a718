//! Mutual authentication of connections: a challenge–response over HMAC-SHA256 proving that
//! both ends know the job's secret, before any other byte is accepted.
//!
//! The exchange is the classic mutual challenge–response of RFC 2104 MACs (as in CRAM-style
//! and Kerberos-less cluster bootstraps, e.g. Gloo/Horovod's shared-key rendezvous), made
//! symmetric so neither side has to wait for the other to speak first:
//!
//! ```text
//! both sides:  send Challenge(own nonce, "I have a secret?")
//!              read the peer's Challenge      -> both without a secret: done (unauthenticated)
//!              send Proof(HMAC(K, "dmsc-auth-v1" | purpose | own side | context | own nonce | peer nonce))
//!              read the peer's Proof and check it (constant time)
//! ```
//!
//! `K` is a per-purpose key, `HMAC(secret, "dmsc-auth-v1 key " | purpose)`, so the raw secret
//! never keys a MAC that goes on the wire and the store's proofs are useless on a data port.
//! Fresh 32-byte nonces from both sides defeat replay; the prover's side (connector or
//! acceptor) in the MAC defeats reflection (a stranger cannot hand an acceptor's proof back
//! to it); the context (the communicator id on the data ports) binds a proof to one
//! communicator.
//!
//! Every message is exactly [`MSG_LEN`] bytes, so the reader knows how much to read and
//! [`decode`] is a pure function over a fixed-size array (a fuzz target):
//!
//! ```text
//! 0..4  magic "DMSA"   4  version (1)   5  kind   6  flags   7  zero
//! kind 1 Challenge: flags bit 0 = the sender has a secret; 8..40 the sender's nonce
//! kind 2 Proof:     flags 0;                               8..40 the HMAC-SHA256
//! kind 3 Refused:   flags = reason (1: too many connections, 2: too many connections
//!                   awaiting authentication); 8..12 the limit (u32 LE); 12..40 zero
//! ```
//!
//! This module performs no I/O: the caller supplies the nonce (from the OS's random source)
//! and moves the bytes (`dmsc-transports::auth`). The authentication says who may connect;
//! it does not encrypt or sign the data that follows.

use crate::error::{Error, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::sync::Arc;

type HmacSha256 = Hmac<Sha256>;

/// Bytes in every authentication message.
pub const MSG_LEN: usize = 40;
/// The magic that opens every authentication message.
pub const MAGIC: [u8; 4] = *b"DMSA";
/// Version of the authentication exchange spoken by this build.
pub const VERSION: u8 = 1;
/// Bytes in a nonce and in a proof.
pub const NONCE_LEN: usize = 32;
/// Secrets shorter than this many bytes work but earn a warning.
pub const MIN_ADVISED_SECRET: usize = 16;

/// The label that opens every MAC input and key derivation.
const LABEL: &[u8] = b"dmsc-auth-v1";

mod kind {
    pub const CHALLENGE: u8 = 1;
    pub const PROOF: u8 = 2;
    pub const REFUSED: u8 = 3;
}

/// A job's shared secret (`DMSC_SECRET`, or the one a unique id carries). Cheap to clone; its
/// `Debug` never shows the bytes.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// A secret from its bytes. Fails on an empty secret.
    pub fn new(bytes: &[u8]) -> Result<Secret> {
        if bytes.is_empty() {
            return Err(Error::invalid("the job secret is empty"));
        }
        Ok(Secret(bytes.into()))
    }

    /// The secret's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: an empty secret cannot be built.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The per-purpose key derived from this secret.
    fn key(&self, purpose: Purpose) -> [u8; 32] {
        let mut m = keyed(&self.0);
        m.update(LABEL);
        m.update(b" key ");
        m.update(purpose.label());
        m.finalize().into_bytes().into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes, redacted>)", self.0.len())
    }
}

/// HMAC-SHA256 keyed with `key`.
fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of every length (long ones are hashed first); `new_from_slice` only
    // fails for MACs with fixed key sizes.
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts keys of every length")
}

/// What a connection is for; each purpose gets its own key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A connection to the rendezvous store.
    Store,
    /// A data or control connection between two ranks.
    Mesh,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Store => b"store",
            Purpose::Mesh => b"mesh",
        }
    }
}

/// Which end of the connection this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The end that called `connect`.
    Connector,
    /// The end that called `accept`.
    Acceptor,
}

impl Side {
    fn byte(self) -> u8 {
        match self {
            Side::Connector => b'C',
            Side::Acceptor => b'A',
        }
    }

    fn other(self) -> Side {
        match self {
            Side::Connector => Side::Acceptor,
            Side::Acceptor => Side::Connector,
        }
    }
}

/// Why an acceptor turned a connection away before authenticating it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It already serves its limit of connections.
    TooManyConnections(u32),
    /// Its limit of connections still authenticating is reached.
    TooManyPending(u32),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooManyConnections(n) => write!(f, "too many connections ({n})"),
            Refusal::TooManyPending(n) => {
                write!(f, "too many connections awaiting authentication ({n})")
            }
        }
    }
}

/// One decoded authentication message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// The sender's nonce, and whether it has a secret at all.
    Challenge {
        /// The sender has a secret (and will prove it).
        secret: bool,
        /// The sender's fresh random nonce.
        nonce: [u8; NONCE_LEN],
    },
    /// The sender's proof of knowledge of the secret.
    Proof {
        /// HMAC-SHA256 over the exchange (see the [module docs](self)).
        mac: [u8; NONCE_LEN],
    },
    /// The acceptor turns the connection away; it closes it next.
    Refused(Refusal),
}

impl Message {
    /// The message's [`MSG_LEN`] bytes.
    pub fn encode(&self) -> [u8; MSG_LEN] {
        let mut b = [0u8; MSG_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        match self {
            Message::Challenge { secret, nonce } => {
                b[5] = kind::CHALLENGE;
                b[6] = u8::from(*secret);
                b[8..].copy_from_slice(nonce);
            }
            Message::Proof { mac } => {
                b[5] = kind::PROOF;
                b[8..].copy_from_slice(mac);
            }
            Message::Refused(r) => {
                b[5] = kind::REFUSED;
                let (code, limit) = match r {
                    Refusal::TooManyConnections(n) => (1, n),
                    Refusal::TooManyPending(n) => (2, n),
                };
                b[6] = code;
                b[8..12].copy_from_slice(&limit.to_le_bytes());
            }
        }
        b
    }
}

/// Check the first bytes of a message as they arrive (`buf` may be shorter than
/// [`MSG_LEN`]), so a reader can drop a stranger that sends garbage without waiting for the
/// rest of it.
pub fn check_prefix(buf: &[u8]) -> Result<()> {
    let n = buf.len().min(MAGIC.len());
    if buf[..n] != MAGIC[..n] {
        return Err(Error::protocol(format!(
            "expected an authentication message, got bytes {:02x?}{}",
            &buf[..buf.len().min(8)],
            hint(buf)
        )));
    }
    match buf.get(4) {
        Some(&v) if v != VERSION => Err(Error::protocol(format!(
            "authentication version {v} is not supported (this build speaks version \
             {VERSION}); are all ranks running the same dmsc?"
        ))),
        _ => Ok(()),
    }
}

/// What a wrong first few bytes probably are.
fn hint(buf: &[u8]) -> &'static str {
    if buf.starts_with(b"DMSS") {
        " (a store request from a peer that skipped authentication: an older dmsc?)"
    } else if buf.starts_with(b"DMSC") {
        " (a frame from a peer that skipped authentication: an older dmsc?)"
    } else {
        " (not a dmsc peer)"
    }
}

/// Decode one message; every defect is an [`Error::Protocol`] that says which. Pure, and
/// never panics.
pub fn decode(b: &[u8; MSG_LEN]) -> Result<Message> {
    check_prefix(b)?;
    let bad = |why: String| {
        Err(Error::protocol(format!(
            "bad authentication message: {why}"
        )))
    };
    if b[7] != 0 {
        return bad(format!("reserved byte 7 is {:#04x}, not zero", b[7]));
    }
    let mut tail = [0u8; NONCE_LEN];
    tail.copy_from_slice(&b[8..]);
    match b[5] {
        kind::CHALLENGE => match b[6] {
            0 | 1 => Ok(Message::Challenge {
                secret: b[6] == 1,
                nonce: tail,
            }),
            f => bad(format!("unknown challenge flags {f:#04x}")),
        },
        kind::PROOF if b[6] != 0 => bad(format!("unknown proof flags {:#04x}", b[6])),
        kind::PROOF => Ok(Message::Proof { mac: tail }),
        kind::REFUSED => {
            if b[12..].iter().any(|&x| x != 0) {
                return bad("refusal with non-zero reserved bytes".into());
            }
            let limit = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
            match b[6] {
                1 => Ok(Message::Refused(Refusal::TooManyConnections(limit))),
                2 => Ok(Message::Refused(Refusal::TooManyPending(limit))),
                r => bad(format!("unknown refusal reason {r}")),
            }
        }
        k => bad(format!("unknown kind {k}")),
    }
}

/// One end of one authentication exchange. Drive it with [`challenge`](Self::challenge),
/// [`on_challenge`](Self::on_challenge) and [`on_proof`](Self::on_proof).
pub struct Handshake {
    key: Option<[u8; 32]>,
    purpose: Purpose,
    side: Side,
    context: u64,
    nonce: [u8; NONCE_LEN],
    peer_nonce: Option<[u8; NONCE_LEN]>,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("secret", &self.key.is_some())
            .field("purpose", &self.purpose)
            .field("side", &self.side)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Start an exchange. `secret`: the job's secret, or `None` to run unauthenticated (the
    /// peer must have none either); `context`: a value both ends must agree on (the
    /// communicator id for the data ports, 0 for the store); `nonce`: 32 fresh random bytes.
    pub fn new(
        secret: Option<&Secret>,
        purpose: Purpose,
        side: Side,
        context: u64,
        nonce: [u8; NONCE_LEN],
    ) -> Handshake {
        Handshake {
            key: secret.map(|s| s.key(purpose)),
            purpose,
            side,
            context,
            nonce,
            peer_nonce: None,
        }
    }

    /// Whether this end has a secret.
    pub fn authenticated(&self) -> bool {
        self.key.is_some()
    }

    /// The first message to send.
    pub fn challenge(&self) -> [u8; MSG_LEN] {
        Message::Challenge {
            secret: self.key.is_some(),
            nonce: self.nonce,
        }
        .encode()
    }

    /// Take the peer's challenge. Returns the proof to send next, or `None` when neither end
    /// has a secret (the exchange is then complete). Fails on anything but a well-formed
    /// challenge, on a secret on one end only, and on a peer that echoes this end's nonce.
    pub fn on_challenge(&mut self, msg: &[u8; MSG_LEN]) -> Result<Option<[u8; MSG_LEN]>> {
        let (secret, nonce) = match decode(msg)? {
            Message::Challenge { secret, nonce } => (secret, nonce),
            Message::Proof { .. } => {
                return Err(Error::protocol(
                    "the peer sent a proof before its challenge",
                ))
            }
            Message::Refused(r) => {
                return Err(Error::protocol(format!(
                    "the peer refused the connection: {r}"
                )))
            }
        };
        let key = match (self.key, secret) {
            (Some(key), true) => key,
            (Some(_), false) => {
                return Err(Error::protocol(
                    "secret mismatch: this process has a job secret (DMSC_SECRET) but the \
                     peer has none; set the same DMSC_SECRET for every rank and the store",
                ))
            }
            (None, true) => {
                return Err(Error::protocol(
                    "secret mismatch: the peer has a job secret (DMSC_SECRET) but this \
                     process has none; set the same DMSC_SECRET for every rank and the store",
                ))
            }
            (None, false) => {
                self.peer_nonce = Some(nonce);
                return Ok(None);
            }
        };
        if nonce == self.nonce {
            return Err(Error::protocol(
                "the peer sent back this end's own nonce (a reflection attempt?)",
            ));
        }
        self.peer_nonce = Some(nonce);
        let mut m = keyed(&key);
        self.feed(&mut m, self.side, &self.nonce, &nonce);
        let mac = m.finalize().into_bytes().into();
        Ok(Some(Message::Proof { mac }.encode()))
    }

    /// Check the peer's proof; `Ok` means the peer knows the secret and the exchange is
    /// complete. Fails on anything but a proof that matches.
    pub fn on_proof(&self, msg: &[u8; MSG_LEN]) -> Result<()> {
        let (Some(key), Some(peer_nonce)) = (self.key, self.peer_nonce) else {
            return Err(Error::protocol(
                "authentication proof out of order (no challenge exchanged with a secret)",
            ));
        };
        let got = match decode(msg)? {
            Message::Proof { mac } => mac,
            other => {
                return Err(Error::protocol(format!(
                    "expected an authentication proof, got {}",
                    match other {
                        Message::Challenge { .. } => "a second challenge",
                        _ => "a refusal",
                    }
                )))
            }
        };
        let mut m = keyed(&key);
        self.feed(&mut m, self.side.other(), &peer_nonce, &self.nonce);
        m.verify_slice(&got).map_err(|_| {
            Error::protocol(
                "authentication failed: the peer did not prove knowledge of the job's secret \
                 (is DMSC_SECRET the same for every rank and the store, and is the \
                 connection meant for this job?)",
            )
        })
    }

    /// The MAC input: label, purpose, the prover's side, context, prover's then verifier's
    /// nonce.
    fn feed(&self, m: &mut HmacSha256, side: Side, prover: &[u8; 32], verifier: &[u8; 32]) {
        m.update(LABEL);
        m.update(self.purpose.label());
        m.update(&[side.byte()]);
        m.update(&self.context.to_le_bytes());
        m.update(prover);
        m.update(verifier);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes()).unwrap()
    }

    fn pair(a: Option<&Secret>, b: Option<&Secret>, ctx: (u64, u64)) -> (Handshake, Handshake) {
        (
            Handshake::new(a, Purpose::Mesh, Side::Connector, ctx.0, [1; 32]),
            Handshake::new(b, Purpose::Mesh, Side::Acceptor, ctx.1, [2; 32]),
        )
    }

    /// Run both ends; the results of (connector, acceptor).
    fn run(mut c: Handshake, mut a: Handshake) -> (Result<()>, Result<()>) {
        let (cc, ac) = (c.challenge(), a.challenge());
        let cp = c.on_challenge(&ac);
        let ap = a.on_challenge(&cc);
        match (cp, ap) {
            (Ok(Some(cp)), Ok(Some(ap))) => (c.on_proof(&ap), a.on_proof(&cp)),
            (Ok(None), Ok(None)) => (Ok(()), Ok(())),
            (c, a) => (c.map(|_| ()), a.map(|_| ())),
        }
    }

    #[test]
    fn the_right_secret_passes_both_ways() {
        let s = secret("correct horse battery staple");
        let (c, a) = pair(Some(&s), Some(&s.clone()), (7, 7));
        let (rc, ra) = run(c, a);
        rc.unwrap();
        ra.unwrap();
    }

    #[test]
    fn a_wrong_secret_fails_both_ways() {
        let (c, a) = pair(Some(&secret("one")), Some(&secret("two")), (7, 7));
        let (rc, ra) = run(c, a);
        for r in [rc, ra] {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("did not prove knowledge"), "{e}");
        }
        // Another communicator's context fails the same way.
        let s = secret("same");
        let (c, a) = pair(Some(&s), Some(&s), (7, 8));
        let (rc, ra) = run(c, a);
        assert!(rc.is_err() && ra.is_err());
    }

    #[test]
    fn purposes_do_not_mix() {
        let s = secret("same");
        let c = Handshake::new(Some(&s), Purpose::Store, Side::Connector, 0, [1; 32]);
        let a = Handshake::new(Some(&s), Purpose::Mesh, Side::Acceptor, 0, [2; 32]);
        let (rc, ra) = run(c, a);
        assert!(rc.is_err() && ra.is_err());
    }

    #[test]
    fn no_secret_on_either_end_passes_and_one_sided_fails() {
        let (rc, ra) = run(pair(None, None, (1, 1)).0, pair(None, None, (1, 1)).1);
        rc.unwrap();
        ra.unwrap();
        let s = secret("s");
        let (c, a) = pair(Some(&s), None, (1, 1));
        let (rc, ra) = run(c, a);
        let rc = rc.unwrap_err().to_string();
        let ra = ra.unwrap_err().to_string();
        assert!(rc.contains("this process has a job secret"), "{rc}");
        assert!(ra.contains("the peer has a job secret"), "{ra}");
        assert!(rc.contains("DMSC_SECRET") && ra.contains("DMSC_SECRET"));
    }

    #[test]
    fn replayed_reflected_and_garbled_messages_fail() {
        let s = secret("s");
        // A proof recorded from one exchange does not pass in another (fresh nonces).
        let (mut c1, mut a1) = pair(Some(&s), Some(&s), (1, 1));
        let a1c = a1.challenge();
        let c1c = c1.challenge();
        let recorded = a1.on_challenge(&c1c).unwrap().unwrap();
        c1.on_challenge(&a1c).unwrap();
        c1.on_proof(&recorded).unwrap();
        let mut c2 = Handshake::new(Some(&s), Purpose::Mesh, Side::Connector, 1, [9; 32]);
        c2.on_challenge(&a1c).unwrap();
        assert!(c2.on_proof(&recorded).is_err());

        // Reflection: a stranger echoes the acceptor's challenge and proof back to it.
        let mut a = Handshake::new(Some(&s), Purpose::Mesh, Side::Acceptor, 1, [3; 32]);
        let e = a.on_challenge(&a.challenge()).unwrap_err().to_string();
        assert!(e.contains("own nonce"), "{e}");
        let mut a = Handshake::new(Some(&s), Purpose::Mesh, Side::Acceptor, 1, [3; 32]);
        let mut other = Handshake::new(Some(&s), Purpose::Mesh, Side::Acceptor, 1, [4; 32]);
        let proof_for_a = other.on_challenge(&a.challenge()).unwrap().unwrap();
        a.on_challenge(&other.challenge()).unwrap();
        assert!(
            a.on_proof(&proof_for_a).is_err(),
            "an acceptor's proof must not pass"
        );

        // Every single-bit flip of a good proof fails.
        let (mut c, mut a) = pair(Some(&s), Some(&s), (1, 1));
        let cc = c.challenge();
        let good = a.on_challenge(&cc).unwrap().unwrap();
        c.on_challenge(&a.challenge()).unwrap();
        for i in 0..MSG_LEN {
            for bit in 0..8 {
                let mut m = good;
                m[i] ^= 1 << bit;
                assert!(c.on_proof(&m).is_err(), "byte {i} bit {bit}");
            }
        }
        c.on_proof(&good).unwrap();
        // Out of order.
        let (mut c, a) = pair(Some(&s), Some(&s), (1, 1));
        assert!(c.on_proof(&good).is_err());
        assert!(c.on_challenge(&good).is_err());
        assert!(c.on_challenge(&a.challenge()).is_ok());
        assert!(c.on_proof(&a.challenge()).is_err());
    }

    #[test]
    fn messages_round_trip_and_garbage_is_named() {
        let msgs = [
            Message::Challenge {
                secret: true,
                nonce: [5; 32],
            },
            Message::Challenge {
                secret: false,
                nonce: [0; 32],
            },
            Message::Proof { mac: [0xab; 32] },
            Message::Refused(Refusal::TooManyConnections(4096)),
            Message::Refused(Refusal::TooManyPending(64)),
        ];
        for m in msgs {
            assert_eq!(decode(&m.encode()).unwrap(), m);
        }
        let e = |b: &[u8; MSG_LEN]| decode(b).unwrap_err().to_string();
        let mut http = [b' '; MSG_LEN];
        http[..14].copy_from_slice(b"GET / HTTP/1.1");
        assert!(e(&http).contains("not a dmsc peer"), "{}", e(&http));
        let mut store = [0u8; MSG_LEN];
        store[..10].copy_from_slice(b"DMSS\x01\x01\xff\xff\xff\xff");
        assert!(e(&store).contains("skipped authentication"));
        let good = msgs[0].encode();
        for (i, v, what) in [
            (4, 2, "version 2"),
            (5, 9, "unknown kind"),
            (6, 2, "flags"),
            (7, 1, "reserved"),
        ] {
            let mut b = good;
            b[i] = v;
            assert!(e(&b).contains(what), "{}", e(&b));
        }
        let mut b = msgs[3].encode();
        b[20] = 1;
        assert!(e(&b).contains("reserved"));
        b = msgs[3].encode();
        b[6] = 7;
        assert!(e(&b).contains("reason"));
        assert!(check_prefix(b"DM").is_ok());
        assert!(check_prefix(b"DX").is_err());
        assert!(check_prefix(b"").is_ok());
    }

    /// xorshift64*: deterministic noise without a dependency.
    fn noise(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn random_bytes_never_panic_or_pass() {
        let s = secret("s");
        let mut st = 0x1234_5678_9abc_def1;
        for i in 0..20_000 {
            let mut b = [0u8; MSG_LEN];
            b.iter_mut().for_each(|x| *x = noise(&mut st) as u8);
            if i % 2 == 0 {
                b[..5].copy_from_slice(b"DMSA\x01");
            }
            let _ = decode(&b);
            let (mut c, _) = pair(Some(&s), None, (0, 0));
            let _ = c.on_challenge(&b);
            assert!(c.on_proof(&b).is_err());
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = secret("hunter2-hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        let h = Handshake::new(Some(&s), Purpose::Store, Side::Connector, 0, [0; 32]);
        assert!(!format!("{h:?}").contains("hunter2"));
    }
}
