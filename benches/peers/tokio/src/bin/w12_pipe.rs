//! W12 (shared/bench/WORKLOADS.md) on tokio: a `cat` child, 1 GiB written
//! to its stdin as 16,384 chunks of 64 KiB (`write_all`, one at a time),
//! read back from its stdout (64 KiB reads) and checked byte by byte, on a
//! current-thread runtime. Chunk j is P XOR (j % 256), P[k] the bits 33..
//! of the k-th LCG step from 1.

use std::process::Stdio;
use std::time::Instant;

use process_peers_tokio::{cpu_s, fail, rss_mb, since};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHUNK: usize = 64 * 1024;
const CHUNKS: usize = 16_384;

fn main() {
    let mut x: u64 = 1;
    let base: Vec<u8> = (0..CHUNK)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect();
    let patterns: Vec<Vec<u8>> = (0..256)
        .map(|j| base.iter().map(|b| b ^ j as u8).collect())
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c0 = cpu_s();
    let t0 = Instant::now();
    let total = rt.block_on(async {
        let mut child = tokio::process::Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| fail("W12", e));
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let pats = &patterns;
        let writer = async move {
            for j in 0..CHUNKS {
                stdin
                    .write_all(&pats[j % 256])
                    .await
                    .unwrap_or_else(|e| fail("W12", e));
            }
            drop(stdin);
        };
        let reader = async {
            let mut buf = vec![0u8; CHUNK];
            let mut at = 0usize;
            loop {
                let n = stdout
                    .read(&mut buf)
                    .await
                    .unwrap_or_else(|e| fail("W12", e));
                if n == 0 {
                    break;
                }
                let mut data = &buf[..n];
                while !data.is_empty() {
                    let (j, k) = (at / CHUNK, at % CHUNK);
                    let m = data.len().min(CHUNK - k);
                    if j >= CHUNKS || data[..m] != pats[j % 256][k..k + m] {
                        fail("W12", format!("wrong bytes at {at}"));
                    }
                    at += m;
                    data = &data[m..];
                }
            }
            at
        };
        let ((), total) = tokio::join!(writer, reader);
        let status = child.wait().await.unwrap_or_else(|e| fail("W12", e));
        if !status.success() {
            fail("W12", format!("cat {status}"));
        }
        total
    });
    if total != CHUNK * CHUNKS {
        fail("W12", format!("read {total}"));
    }
    let wall = since(t0);
    println!(
        "RESULT workload=W12 system=tokio metric=mb_per_s value={:.1} bytes={total} wall_s={wall:.3} cpu_s={:.3} rss_mb={:.1}",
        total as f64 / 1e6 / wall,
        cpu_s() - c0,
        rss_mb()
    );
}
