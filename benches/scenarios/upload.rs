//! Request bodies: 10 x 10 MiB uploads to `/mock/echo` (MB/s, proxy CPU per upload, peak extra
//! RSS sampled every 5 ms) and a declared 11 MiB body, head only, which must get 413 before any
//! of it is sent (time to the status, median of 20).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::judge;
use crate::support::*;

/// 10 MiB upload (throughput, proxy CPU, peak extra RSS) and the 413 path.
pub async fn upload_and_413(r: &mut Report, env: &Env, scale: &Scale) {
    let late_413: Vec<String> = std::env::var("KEYPROXY_BENCH_LATE_413")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    for t in &env.targets {
        let rss0 = t.rss_kib();
        let cpu0 = t.cpu_secs();
        let peak = Arc::new(AtomicU64::new(rss0.unwrap_or(0)));
        let sampler = t.procs.clone().map(|p| {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(p.rss_kib(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        });
        let res = upload(&t.client, &t.url("/mock/echo"), 10 << 20, scale.uploads).await;
        if let Some(s) = sampler {
            s.abort();
        }
        let keep = match res {
            Ok(mbs) => {
                r.set(
                    "upload_mb_s",
                    "10 MiB upload: MB/s",
                    Better::Higher,
                    true,
                    0,
                    &t.name,
                    mbs,
                );
                true
            }
            Err(e) => judge(r, t, false, format!("{}: 10 MiB upload: {e}", t.name)),
        };
        if let (Some(a), Some(b), Some(rss0), true) = (cpu0, t.cpu_secs(), rss0, keep) {
            r.set(
                "upload_cpu_ms",
                "10 MiB upload: proxy CPU per upload (ms)",
                Better::Lower,
                false,
                1,
                &t.name,
                (b - a) / scale.uploads as f64 * 1000.0,
            );
            let extra = peak.load(Ordering::Relaxed).saturating_sub(rss0);
            r.set(
                "upload_extra_rss_kib",
                "10 MiB upload: peak extra RSS (KiB)",
                Better::Lower,
                false,
                0,
                &t.name,
                extra as f64,
            );
        }
        if let Some(port) = t.port {
            if late_413.contains(&t.name) {
                // Rejects an oversized body only once more than 10 MiB of it has arrived: one
                // try, reported in a note, not a failure (and no row: nothing comparable).
                let (status, us) = tokio::task::spawn_blocking(move || too_large(port))
                    .await
                    .unwrap_or((0, f64::NAN));
                r.note(format!(
                    "{}: a declared 11 MiB body (head only) got {} after {:.1} s, not 413 (listed in KEYPROXY_BENCH_LATE_413: it answers 413 only once more than 10 MiB of the body has arrived)",
                    t.name,
                    if status == 0 { "no answer".to_owned() } else { format!("status {status}") },
                    us / 1e6
                ));
                continue;
            }
            let tries = scale.too_large_tries;
            let got = tokio::task::spawn_blocking(move || {
                (0..tries).map(|_| too_large(port)).collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let bad: Vec<u16> = got.iter().map(|g| g.0).filter(|s| *s != 413).collect();
            let keep = judge(
                r,
                t,
                bad.is_empty(),
                format!(
                    "{}: declared 11 MiB body answered {bad:?} (0: no answer), not 413",
                    t.name
                ),
            );
            let us = if keep {
                median(got.iter().map(|g| g.1).collect())
            } else {
                f64::NAN
            };
            r.set(
                "too_large_us",
                "413 for a declared 11 MiB body: time to status, median (us)",
                Better::Lower,
                false,
                0,
                &t.name,
                us,
            );
        }
    }
}
