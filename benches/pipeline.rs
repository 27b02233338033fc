//! The CPU stages in process: compressor → OpenPGP sealer → part writer, on generated data,
//! against zstd alone on the same data in the same run (ratios, not absolute rates, mean
//! something on a shared machine). `cargo bench --bench pipeline`; under `cargo test` it only
//! checks that it runs.

use std::io::Write;
use std::time::Instant;

use s3nap::pipeline::budget::MemoryBudget;
use s3nap::pipeline::compress::{Compression, Compressor};
use s3nap::pipeline::encrypt::Sealer;
use s3nap::pipeline::parts::{Part, PartWriter};
use s3nap::pipeline::schedule::Schedule;
use sequoia_openpgp::cert::CertBuilder;

fn data(len: usize) -> Vec<u8> {
    // Half log-like text, half pseudo-random bytes.
    let mut out = Vec::with_capacity(len);
    let line = b"2026-11-22T03:15:00Z web1 nginx: GET /index.html 200 612\n";
    while out.len() < len / 2 {
        out.extend_from_slice(line);
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let size = if benching { 512 << 20 } else { 8 << 20 };
    let input = data(size);
    let (cert, _) = CertBuilder::general_purpose(Some("bench@s3nap.invalid"))
        .generate()
        .expect("a test key");
    let certs = vec![cert];

    let started = Instant::now();
    let mut zstd = Compressor::new(Compression::Zstd { level: 3 }, std::io::sink()).unwrap();
    for chunk in input.chunks(1 << 20) {
        zstd.write_all(chunk).unwrap();
    }
    zstd.finish().unwrap();
    let baseline = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Part>(4);
    let drain = std::thread::spawn(move || {
        let mut total = 0usize;
        while let Some(part) = rx.blocking_recv() {
            total += part.data.len();
        }
        total
    });
    let mut parts = PartWriter::new(
        tx,
        Schedule::new(16 << 20, None, 256 << 20),
        MemoryBudget::new(256 << 20),
        s3nap::schema::manifest::RANGE_SIZE,
    );
    {
        let sealer = Sealer::new(&mut parts, &certs).unwrap();
        let mut compressor = Compressor::new(Compression::Zstd { level: 3 }, sealer).unwrap();
        for chunk in input.chunks(1 << 20) {
            compressor.write_all(chunk).unwrap();
        }
        compressor.finish().unwrap().finish().unwrap();
    }
    let stored = parts.finish().unwrap();
    let sent = drain.join().unwrap();
    let pipeline = started.elapsed().as_secs_f64();
    assert_eq!(sent as u64, stored.size);

    let mib = size as f64 / (1 << 20) as f64;
    println!(
        "{mib:.0} MiB: zstd alone {:.0} MiB/s; zstd + OpenPGP + parts {:.0} MiB/s; time ratio {:.2}",
        mib / baseline,
        mib / pipeline,
        pipeline / baseline
    );
}
