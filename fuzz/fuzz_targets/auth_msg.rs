//! The authentication exchange (`dmsc_core::auth`): `decode` and `check_prefix` never panic, an
//! accepted message re-encodes to the same 40 bytes, and a `Handshake` fed a hostile challenge
//! and proof accepts the proof exactly when it is the one a peer knowing the secret would send.
//! Input: a flags byte (bit 0: this end has the secret; bit 1: this end is the connector), the
//! peer's challenge, then its proof (40 bytes each).
#![no_main]

use dmsc_core::auth::{check_prefix, decode, Handshake, Purpose, Secret, Side, MSG_LEN};
use libfuzzer_sys::fuzz_target;

const CONTEXT: u64 = 0x00c0_ffee;
const NONCE: [u8; 32] = [0x5a; 32];

fn msg(b: &[u8]) -> Option<&[u8; MSG_LEN]> {
    b.get(..MSG_LEN)?.try_into().ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let _ = check_prefix(rest);
    let challenge = msg(rest);
    let proof = rest.get(MSG_LEN..).and_then(msg);
    for m in [challenge, proof].into_iter().flatten() {
        if let Ok(decoded) = decode(m) {
            assert_eq!(
                &decoded.encode(),
                m,
                "{decoded:?} re-encodes to other bytes"
            );
            for k in 0..=MSG_LEN {
                assert!(check_prefix(&m[..k]).is_ok(), "prefix of {k} bytes refused");
            }
        }
    }
    let Some(challenge) = challenge else {
        return;
    };
    let secret = Secret::new(b"the fuzzer's job secret").expect("a secret");
    let (mine, theirs) = if flags & 2 == 0 {
        (Side::Acceptor, Side::Connector)
    } else {
        (Side::Connector, Side::Acceptor)
    };
    let have = (flags & 1 == 1).then_some(&secret);
    let mut me = Handshake::new(have, Purpose::Mesh, mine, CONTEXT, NONCE);
    match me.on_challenge(challenge) {
        Ok(Some(_)) => {
            assert!(have.is_some(), "a proof without a secret");
            let Some(proof) = proof else {
                return;
            };
            // The proof a peer with the secret and the challenge's nonce would send.
            let mut nonce = [0u8; 32];
            nonce.copy_from_slice(&challenge[8..]);
            let mut peer = Handshake::new(Some(&secret), Purpose::Mesh, theirs, CONTEXT, nonce);
            let genuine = peer
                .on_challenge(&me.challenge())
                .expect("the genuine peer takes this end's challenge")
                .expect("the genuine peer proves itself");
            assert_eq!(
                me.on_proof(proof).is_ok(),
                proof == &genuine,
                "a proof was judged wrongly"
            );
            assert!(me.on_proof(&genuine).is_ok(), "the genuine proof refused");
        }
        Ok(None) => {
            assert!(have.is_none(), "a secret-holding end skipped the proof");
            if let Some(proof) = proof {
                assert!(
                    me.on_proof(proof).is_err(),
                    "a proof taken without a secret"
                );
            }
        }
        Err(_) => {
            if let Some(proof) = proof {
                let fresh = Handshake::new(have, Purpose::Mesh, mine, CONTEXT, NONCE);
                assert!(
                    fresh.on_proof(proof).is_err(),
                    "a proof before any challenge"
                );
            }
        }
    }
});
