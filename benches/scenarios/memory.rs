//! Memory: each proxy's idle RSS and PSS before any traffic, then RSS with 1,000 and 10,000
//! open `/mock/hang` streams (both legs held by the proxy), and 1 s after they close.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::*;

/// Idle RSS and PSS of every proxy, before any traffic; the idle RSS per target, for
/// [`open_streams`].
pub async fn idle(r: &mut Report, env: &Env) -> HashMap<String, u64> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut idle_rss = HashMap::new();
    for t in env.targets.iter().filter(|t| t.is_proxy()) {
        if let (Some(rss), Some(pss)) = (t.rss_kib(), t.pss_kib()) {
            idle_rss.insert(t.name.clone(), rss);
            r.set(
                "idle_rss_kib",
                "idle RSS (KiB, summed over processes)",
                Better::Lower,
                false,
                0,
                &t.name,
                rss as f64,
            );
            r.set(
                "idle_pss_kib",
                "idle PSS (KiB, summed over processes)",
                Better::Lower,
                false,
                0,
                &t.name,
                pss as f64,
            );
            r.set(
                "processes",
                "processes",
                Better::Neither,
                false,
                0,
                &t.name,
                t.procs.as_ref().map_or(0, Procs::count) as f64,
            );
        }
    }
    idle_rss
}

/// Memory with open streams (both legs), and after they close. Fresh clients first: the
/// old ones' idle pooled connections (up to 1,000 per proxy) are closed, not counted.
pub async fn open_streams(
    r: &mut Report,
    env: &mut Env,
    scale: &Scale,
    idle_rss: &HashMap<String, u64>,
) {
    for t in env.targets.iter_mut().filter(|t| t.is_proxy()) {
        t.client = AnyClient::Plain(plain_client());
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let proxies: Vec<&Target> = env.targets.iter().filter(|t| t.is_proxy()).collect();
    for t in &proxies {
        let Some(procs) = t.procs.clone() else {
            continue;
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = procs.rss_kib();
        r.set(
            "rss_before_streams_kib",
            "RSS before opening streams (KiB)",
            Better::Lower,
            false,
            0,
            &t.name,
            before as f64,
        );
        for open in scale.open_streams.iter().copied() {
            let p = procs.clone();
            let (held, during) =
                hold_streams(&t.client, &t.url("/mock/hang"), open, move || p.rss_kib()).await;
            if t.name == KEYPROXY {
                r.check(
                    held == open,
                    format!(
                        "{}: only {held} of {open} streams opened (open-file limit: {})",
                        t.name,
                        procs::open_file_limit().map_or("unlimited".into(), |l| l.to_string())
                    ),
                );
            } else if held < open {
                // A peer's own limit (the node peer needs two descriptors per stream in one
                // process, above this machine's 20,000): a note, and the figure over what it held.
                r.note(format!(
                    "{}: held only {held} of {open} open streams; its memory per stream is over those {held}",
                    t.name
                ));
            }
            r.set(
                &format!("rss_open_{open}_kib"),
                &format!("RSS with {open} open streams (KiB)"),
                Better::Lower,
                false,
                0,
                &t.name,
                during as f64,
            );
            let per = during.saturating_sub(before) as f64 / held.max(1) as f64;
            r.set(
                &format!("kib_per_stream_{open}"),
                &format!("memory per open stream at {open} (KiB, RSS over before)"),
                Better::Lower,
                false,
                1,
                &t.name,
                per,
            );
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        let after = procs.rss_kib();
        r.set(
            "rss_after_close_kib",
            "RSS 1 s after the streams closed (KiB)",
            Better::Lower,
            false,
            0,
            &t.name,
            after as f64,
        );
        r.set(
            "rss_after_vs_before",
            "RSS after the streams closed / before they opened",
            Better::Lower,
            false,
            2,
            &t.name,
            after as f64 / before.max(1) as f64,
        );
        if let Some(idle) = idle_rss.get(&t.name).filter(|i| **i > 0) {
            r.set(
                "rss_after_vs_idle",
                "RSS after the streams closed / idle RSS at start",
                Better::Lower,
                false,
                2,
                &t.name,
                after as f64 / *idle as f64,
            );
        }
    }
}
