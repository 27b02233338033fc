//! Version listing of a bucket: the parallel snapshot listing (work-stealing over prefixes and
//! key ranges) against one sequential ListObjectVersions pagination of the same bucket, in the
//! same run. The bucket (moto, `scripts/s3-test-server.py --bench-versions N`) holds N versions,
//! two per key, 80 % of the keys in one flat prefix. `cargo bench --bench listing` (N = 100,000;
//! `S3NAP_LIST_LATENCY_MS` adds a per-listing delay like a distant region's round trip); under
//! `cargo test` it lists 4,000 versions and checks that both listings return the same versions.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use s3nap::bucket::client::BucketClient;
use s3nap::bucket::listing::{list_parallel, list_sequential, Listed};
use s3nap::store::retry::RetryPolicy;
use s3nap::store::s3::{client, S3Settings};
use tokio::sync::mpsc;

const WORKERS: usize = 8;

type Seen = BTreeSet<(String, String)>;

async fn drain(mut rx: mpsc::Receiver<Vec<Listed>>) -> Seen {
    let mut seen = Seen::new();
    while let Some(batch) = rx.recv().await {
        seen.extend(
            batch
                .into_iter()
                .map(|l| (l.version.key, l.version.version_id)),
        );
    }
    seen
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let versions: usize = if benching { 100_000 } else { 4_000 };
    let latency = std::env::var("S3NAP_LIST_LATENCY_MS").unwrap_or_else(|_| "0".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("S3NAP_TEST_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let mut server = Command::new(&python)
        .arg(root.join("scripts/s3-test-server.py"))
        .args(["--bench-versions", &versions.to_string()])
        .args(["--list-latency-ms", &latency])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the moto S3 server (run scripts/setup-tests.sh)");
    let mut line = String::new();
    BufReader::new(server.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: serde_json::Value = serde_json::from_str(&line).expect("server info line");
    let keyfile = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        keyfile.path(),
        format!(
            "key={}\nsecret={}\n",
            info["access_key"].as_str().unwrap(),
            info["secret_key"].as_str().unwrap()
        ),
    )
    .unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bucket = runtime.block_on(async {
        let settings = S3Settings {
            endpoint: Some(info["endpoint"].as_str().unwrap().to_string()),
            region: None,
            keyfile: Some(keyfile.path().to_path_buf()),
            timeout: Duration::from_secs(120),
            ..S3Settings::default()
        };
        let client = client(&settings).await.unwrap();
        Arc::new(BucketClient::new(
            client,
            "listing-bench",
            RetryPolicy::default(),
        ))
    });

    let rounds = if benching { 3 } else { 1 };
    let (mut sequential, mut parallel) = (Vec::new(), Vec::new());
    let (mut splits, mut requests) = (0, (0, 0));
    for _ in 0..rounds {
        let (tx, rx) = mpsc::channel(16);
        let started = Instant::now();
        let (stats, seen_one) =
            runtime.block_on(async { tokio::join!(list_sequential(&bucket, "", tx), drain(rx)) });
        sequential.push(started.elapsed().as_secs_f64());
        let stats = stats.unwrap();
        requests.0 = stats.requests;
        assert_eq!(
            seen_one.len(),
            versions,
            "the sequential listing sees every version"
        );
        assert_eq!(stats.versions as usize, versions);

        let (tx, rx) = mpsc::channel(16);
        let started = Instant::now();
        let (stats, seen_all) = runtime.block_on(async {
            tokio::join!(list_parallel(bucket.clone(), "", WORKERS, tx), drain(rx))
        });
        parallel.push(started.elapsed().as_secs_f64());
        let stats = stats.unwrap();
        splits = stats.splits;
        requests.1 = stats.requests;
        assert_eq!(
            seen_all, seen_one,
            "the parallel listing sees exactly the same versions"
        );
        assert_eq!(stats.versions as usize, versions, "no version listed twice");
    }
    let _ = server.kill();
    let _ = server.wait();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (s, p) = (median(&mut sequential), median(&mut parallel));
    println!(
        "listing {versions} versions (list latency {latency} ms): sequential {s:.2} s ({:.0} versions/s, {} requests), \
         parallel x{WORKERS} {p:.2} s ({:.0} versions/s, {} requests, {splits} range splits); parallel/sequential speed ratio {:.2}",
        versions as f64 / s,
        requests.0,
        versions as f64 / p,
        requests.1,
        s / p
    );
}
