//! ring vs aws-lc-rs on the operations the gateway performs, with the same keys and inputs.
//! The numbers back docs/decisions/0002-crypto-provider.md.
//!
//!     cargo run --release
//!
//! Plain `std::time` measurement, no harness. Each round runs a fixed number of operations with one
//! provider and then the other, the order swapped every round, so that noise from other tenants of
//! this shared machine falls on both providers alike. Reported: median of the rounds in
//! microseconds per operation, with min and max; `ring/aws` is the ratio of the medians (above 1:
//! aws-lc-rs is faster); MB/s (10^6 bytes per second, from the medians) for the bulk cases.

use std::hint::black_box;
use std::time::Instant;

use aws_lc_rs::encoding::AsDer;

const ROUNDS: usize = 15;
const MSG_LEN: usize = 1024;
const SEAL_LEN: usize = 16 * 1024;
const BULK_LEN: usize = 1024 * 1024;

/// Sorted per-round microseconds per operation.
struct Rounds(Vec<f64>);

impl Rounds {
    fn median(&self) -> f64 {
        self.0[self.0.len() / 2]
    }
    fn min(&self) -> f64 {
        self.0[0]
    }
    fn max(&self) -> f64 {
        self.0[self.0.len() - 1]
    }
}

/// The result goes through `black_box` so the optimiser cannot drop the work that made it.
fn time_round<T>(per_round: usize, op: &mut impl FnMut() -> T) -> f64 {
    let start = Instant::now();
    for _ in 0..per_round {
        black_box(op());
    }
    start.elapsed().as_secs_f64() * 1e6 / per_round as f64
}

/// Runs both providers for `ROUNDS` rounds, alternating which goes first, and prints one row.
/// `bytes` is the input size of one operation when a throughput figure is wanted.
fn compare<R, A>(
    name: &str,
    per_round: usize,
    bytes: Option<usize>,
    mut ring: impl FnMut() -> R,
    mut aws: impl FnMut() -> A,
) {
    // Warm caches, lazily initialised CPU-feature detection and the allocator first.
    for _ in 0..per_round.min(20) {
        black_box(ring());
        black_box(aws());
    }
    let (mut r, mut a) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            r.push(time_round(per_round, &mut ring));
            a.push(time_round(per_round, &mut aws));
        } else {
            a.push(time_round(per_round, &mut aws));
            r.push(time_round(per_round, &mut ring));
        }
    }
    r.sort_by(f64::total_cmp);
    a.sort_by(f64::total_cmp);
    let (r, a) = (Rounds(r), Rounds(a));
    let cell = |x: &Rounds| format!("{:.2} ({:.2}-{:.2})", x.median(), x.min(), x.max());
    let rate = bytes.map_or(String::new(), |b| {
        // bytes per microsecond is 10^6 bytes per second.
        format!("{:.0} / {:.0}", b as f64 / r.median(), b as f64 / a.median())
    });
    println!("{name:<26} {:>26} {:>26} {:>8.2} {:>13}", cell(&r), cell(&a), r.median() / a.median(), rate);
}

fn main() {
    let msg = vec![0x5a_u8; MSG_LEN];
    let bulk = vec![0xa5_u8; BULK_LEN];
    let rng = ring::rand::SystemRandom::new();
    let aws_rng = aws_lc_rs::rand::SystemRandom::new();

    println!(
        "{:<26} {:>26} {:>26} {:>8} {:>13}",
        "operation", "ring us/op (min-max)", "aws-lc-rs us/op (min-max)", "ring/aws", "MB/s ring/aws"
    );

    // Ed25519: one PKCS#8 v2 key (ring only reads v2) loaded into both providers.
    {
        use aws_lc_rs::signature as a;
        use ring::signature as r;
        let pkcs8 = r::Ed25519KeyPair::generate_pkcs8(&rng).expect("ed25519 keygen");
        let rk = r::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("ring ed25519 load");
        let ak = a::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("aws ed25519 load");
        let public = r::KeyPair::public_key(&rk).as_ref().to_vec();
        let sig = rk.sign(&msg);
        // Ed25519 is deterministic: the same key and message must give the same bytes.
        assert_eq!(sig.as_ref(), ak.sign(&msg).as_ref(), "ed25519 signatures differ");
        let rv = r::UnparsedPublicKey::new(&r::ED25519, &public);
        let av = a::UnparsedPublicKey::new(&a::ED25519, &public);
        compare("ed25519 sign 1 KiB", 500, None, || rk.sign(black_box(&msg)), || ak.sign(black_box(&msg)));
        compare(
            "ed25519 verify 1 KiB",
            300,
            None,
            || rv.verify(black_box(&msg), black_box(sig.as_ref())).expect("ring verify"),
            || av.verify(black_box(&msg), black_box(sig.as_ref())).expect("aws verify"),
        );
    }

    // ECDSA P-256 with SHA-256, ASN.1 (DER) signatures, as in X.509 and TLS.
    {
        use aws_lc_rs::signature as a;
        use ring::signature as r;
        let pkcs8 =
            r::EcdsaKeyPair::generate_pkcs8(&r::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("p256 keygen");
        let rk = r::EcdsaKeyPair::from_pkcs8(&r::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .expect("ring p256 load");
        let ak = a::EcdsaKeyPair::from_pkcs8(&a::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
            .expect("aws p256 load");
        let public = r::KeyPair::public_key(&rk).as_ref().to_vec();
        let rv = r::UnparsedPublicKey::new(&r::ECDSA_P256_SHA256_ASN1, &public);
        let av = a::UnparsedPublicKey::new(&a::ECDSA_P256_SHA256_ASN1, &public);
        // ECDSA is randomised, so check interoperability instead: each verifies the other's signature.
        let rsig = rk.sign(&rng, &msg).expect("ring p256 sign");
        let asig = ak.sign(&aws_rng, &msg).expect("aws p256 sign");
        av.verify(&msg, rsig.as_ref()).expect("aws verifies ring's p256 signature");
        rv.verify(&msg, asig.as_ref()).expect("ring verifies aws's p256 signature");
        compare(
            "ecdsa-p256 sign 1 KiB",
            500,
            None,
            || rk.sign(&rng, black_box(&msg)).expect("ring sign"),
            || ak.sign(&aws_rng, black_box(&msg)).expect("aws sign"),
        );
        compare(
            "ecdsa-p256 verify 1 KiB",
            250,
            None,
            || rv.verify(black_box(&msg), black_box(asig.as_ref())).expect("ring verify"),
            || av.verify(black_box(&msg), black_box(asig.as_ref())).expect("aws verify"),
        );
    }

    // RSA-PSS SHA-256, 3072-bit. ring cannot generate RSA keys, so aws-lc-rs generates one and
    // exports PKCS#8 v1 DER, which both providers then load.
    {
        use aws_lc_rs::signature as a;
        use ring::signature as r;
        let generated =
            aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa3072).expect("rsa keygen");
        let der: aws_lc_rs::encoding::Pkcs8V1Der<'_> = generated.as_der().expect("rsa pkcs8 export");
        let rk = r::RsaKeyPair::from_pkcs8(der.as_ref()).expect("ring rsa load");
        let ak = a::RsaKeyPair::from_pkcs8(der.as_ref()).expect("aws rsa load");
        let public = r::KeyPair::public_key(&rk).as_ref().to_vec();
        let rv = r::UnparsedPublicKey::new(&r::RSA_PSS_2048_8192_SHA256, &public);
        let av = a::UnparsedPublicKey::new(&a::RSA_PSS_2048_8192_SHA256, &public);
        let mut rsig = vec![0; rk.public().modulus_len()];
        let mut asig = vec![0; ak.public_modulus_len()];
        rk.sign(&r::RSA_PSS_SHA256, &rng, &msg, &mut rsig).expect("ring rsa sign");
        ak.sign(&a::RSA_PSS_SHA256, &aws_rng, &msg, &mut asig).expect("aws rsa sign");
        av.verify(&msg, &rsig).expect("aws verifies ring's pss signature");
        rv.verify(&msg, &asig).expect("ring verifies aws's pss signature");
        let mut out = vec![0; rsig.len()];
        let mut aout = vec![0; asig.len()];
        compare(
            "rsa-pss-3072 sign 1 KiB",
            10,
            None,
            || rk.sign(&r::RSA_PSS_SHA256, &rng, black_box(&msg), &mut out).expect("ring sign"),
            || ak.sign(&a::RSA_PSS_SHA256, &aws_rng, black_box(&msg), &mut aout).expect("aws sign"),
        );
        compare(
            "rsa-pss-3072 verify 1 KiB",
            300,
            None,
            || rv.verify(black_box(&msg), black_box(&asig)).expect("ring verify"),
            || av.verify(black_box(&msg), black_box(&asig)).expect("aws verify"),
        );
    }

    // SHA-256: a small input shows per-call overhead, a large one the hashing rate.
    {
        let (rd, ad) = (&ring::digest::SHA256, &aws_lc_rs::digest::SHA256);
        assert_eq!(
            ring::digest::digest(rd, &bulk).as_ref(),
            aws_lc_rs::digest::digest(ad, &bulk).as_ref(),
            "sha-256 digests differ"
        );
        compare(
            "sha-256 1 KiB",
            5000,
            Some(MSG_LEN),
            || ring::digest::digest(rd, black_box(&msg)),
            || aws_lc_rs::digest::digest(ad, black_box(&msg)),
        );
        compare(
            "sha-256 1 MiB",
            10,
            Some(BULK_LEN),
            || ring::digest::digest(rd, black_box(&bulk)),
            || aws_lc_rs::digest::digest(ad, black_box(&bulk)),
        );
    }

    // AES-256-GCM seal in place, same key, fresh counter nonce per call (a repeated nonce would be
    // a misuse that a reader could copy). Sealing the previous ciphertext again costs the same.
    {
        use aws_lc_rs::aead as a;
        use ring::aead as r;
        let key = [7_u8; 32];
        let rk = r::LessSafeKey::new(r::UnboundKey::new(&r::AES_256_GCM, &key).expect("ring aes key"));
        let ak = a::LessSafeKey::new(a::UnboundKey::new(&a::AES_256_GCM, &key).expect("aws aes key"));
        let nonce = |n: u64| {
            let mut b = [0_u8; 12];
            b[4..].copy_from_slice(&n.to_be_bytes());
            b
        };
        let (mut rbuf, mut abuf) = (vec![0x33_u8; SEAL_LEN], vec![0x33_u8; SEAL_LEN]);
        let rtag = rk.seal_in_place_separate_tag(
            r::Nonce::assume_unique_for_key(nonce(0)),
            r::Aad::empty(),
            &mut rbuf,
        );
        let atag = ak.seal_in_place_separate_tag(
            a::Nonce::assume_unique_for_key(nonce(0)),
            a::Aad::empty(),
            &mut abuf,
        );
        assert_eq!(rbuf, abuf, "aes-gcm ciphertexts differ");
        assert_eq!(
            rtag.expect("ring seal").as_ref(),
            atag.expect("aws seal").as_ref(),
            "aes-gcm tags differ"
        );
        let (mut rn, mut an) = (0_u64, 0_u64); // nonce 0 was used by the check above
        compare(
            "aes-256-gcm seal 16 KiB",
            1000,
            Some(SEAL_LEN),
            || {
                rn += 1;
                let n = r::Nonce::assume_unique_for_key(nonce(rn));
                rk.seal_in_place_separate_tag(n, r::Aad::empty(), &mut rbuf).expect("ring seal")
            },
            || {
                an += 1;
                let n = a::Nonce::assume_unique_for_key(nonce(an));
                ak.seal_in_place_separate_tag(n, a::Aad::empty(), &mut abuf).expect("aws seal")
            },
        );
    }
}
