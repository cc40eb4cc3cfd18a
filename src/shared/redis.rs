//! The Redis side of the shared store: one multiplexed, self-reconnecting connection
//! (`ConnectionManager`), the two Lua scripts (admission, charge) run by EVALSHA, and the
//! TLS roots of `rediss://` taken from the proxy's `tls:` plan.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use crate::config::plan::TlsPlan;
use crate::config::shared_state::SharedStatePlan;

/// One admission: checks every limit of `KEYS`, in order, against Redis's own clock; counts
/// (`incr`) only when all pass. `ARGV` holds four numbers per key: `unit` (seconds per bucket:
/// 1 for per-minute windows, 60 for per-hour ones, 0 for a plain counter), `limit`, `need`
/// (refuse when `sum + need > limit`; 0 only reads) and `incr`. A window is a hash of up to
/// 60 buckets (field = Unix time / unit), as `policy/ratelimit.rs` keeps in memory.
/// Returns `{0, 0, sum1, reset1, ...}` (reset: seconds until the oldest bucket leaves, -1
/// when empty or a counter), or `{i, retry_after}` when key `i` refuses (-1: never frees up).
/// Kept cheap, since Redis runs it for every request: one pass per window, sorting only to
/// answer a refusal, EXPIRE only when a bucket is created.
const ADMIT: &str = r#"
local now = tonumber(redis.call('TIME')[1])
local out = {0, 0}
for i = 1, #KEYS do
  local unit, limit, need = tonumber(ARGV[4*i-3]), tonumber(ARGV[4*i-2]), tonumber(ARGV[4*i-1])
  local sum, reset, oldest, live = 0, -1, nil, nil
  if unit == 0 then
    sum = tonumber(redis.call('GET', KEYS[i]) or '0')
  else
    local stamp = math.floor(now / unit)
    local all = redis.call('HGETALL', KEYS[i])
    live = {}
    for j = 1, #all, 2 do
      local s, c = tonumber(all[j]), tonumber(all[j + 1])
      if s and c and s <= stamp and stamp - s < 60 then
        sum = sum + c
        live[#live + 1] = {s, c}
        if oldest == nil or s < oldest then oldest = s end
      else
        redis.call('HDEL', KEYS[i], all[j])
      end
    end
    if oldest then reset = (oldest + 60) * unit - now end
    if need > 0 and sum + need > limit then
      table.sort(live, function(a, b) return a[1] < b[1] end)
      local retry, total = (stamp + 60) * unit - now, sum
      for _, b in ipairs(live) do
        total = total - b[2]
        if total + need <= limit then
          retry = (b[1] + 60) * unit - now
          break
        end
      end
      return {i, retry}
    end
  end
  if need > 0 and sum + need > limit then return {i, -1} end
  out[#out + 1] = sum
  out[#out + 1] = reset
end
for i = 1, #KEYS do
  local unit, incr = tonumber(ARGV[4*i-3]), tonumber(ARGV[4*i])
  if incr > 0 then
    if unit == 0 then
      redis.call('INCRBY', KEYS[i], incr)
    elseif redis.call('HINCRBY', KEYS[i], math.floor(now / unit), incr) == incr then
      -- A new bucket (at most one per unit): the key outlives it by the window's span.
      redis.call('EXPIRE', KEYS[i], unit * 61)
    end
    out[2 * i + 1] = out[2 * i + 1] + incr
  end
end
return out
"#;

/// One charge at completion: `ARGV[1]` tokens onto each budget's three keys (`KEYS` in
/// threes: per-minute window, per-hour window, total counter), Redis's clock for the buckets.
const CHARGE: &str = r#"
local now = tonumber(redis.call('TIME')[1])
local t = tonumber(ARGV[1])
for i = 1, #KEYS, 3 do
  if redis.call('HINCRBY', KEYS[i], now, t) == t then
    redis.call('EXPIRE', KEYS[i], 61)
  end
  if redis.call('HINCRBY', KEYS[i + 1], math.floor(now / 60), t) == t then
    redis.call('EXPIRE', KEYS[i + 1], 3660)
  end
  redis.call('INCRBY', KEYS[i + 2], t)
end
return 1
"#;

/// Why an operation got no answer: `timeout` or `error` (the metric label), and a message
/// without the URL or its credentials.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: &'static str,
    pub message: String,
}

/// The connections and the scripts.
pub struct Redis {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// The monitor's, made at start on the main runtime.
    conn: ConnectionManager,
    /// One per worker (`server::workers`), made by its first request on that worker's
    /// thread, so a request's Redis I/O runs on its own thread, as its upstream pool does.
    per_worker: Vec<OnceLock<ConnectionManager>>,
    admit: Script,
    charge: Script,
    /// The URL's user name and password, cut out of any error message.
    hidden: Vec<String>,
}

impl Redis {
    /// Builds the client; connects lazily (the first operation, or the monitor's first ping),
    /// so a Redis that is down at start does not stop the proxy.
    pub fn new(plan: &SharedStatePlan, tls: &TlsPlan, workers: usize) -> Result<Redis, String> {
        let url = plan.url.expose();
        let hidden = credentials_of(url);
        let what = format!("the Redis URL in {}", plan.redis_ref);
        let client = if plan.tls {
            let root_cert = root_pem(tls)?;
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert,
                },
            )
        } else {
            redis::Client::open(url)
        }
        .map_err(|e| format!("{what} is not usable ({})", e.category()))?;
        // Every call is also bounded by `timeout` on our side; these bound the manager's own
        // reconnects, which go on in the background while requests fall back.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(plan.timeout.max(Duration::from_secs(1))))
            .set_response_timeout(Some(plan.timeout.max(Duration::from_millis(500))))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| format!("{what} is not usable ({})", e.category()))?;
        Ok(Redis {
            client,
            config,
            conn,
            per_worker: (0..workers.max(1)).map(|_| OnceLock::new()).collect(),
            admit: Script::new(ADMIT),
            charge: Script::new(CHARGE),
            hidden,
        })
    }

    /// This worker's connection (the monitor's outside any worker, or if one cannot be made).
    fn worker_conn(&self) -> ConnectionManager {
        let Some(slot) = self.per_worker.get(crate::upstream::pool::current_worker()) else {
            return self.conn.clone();
        };
        if let Some(c) = slot.get() {
            return c.clone();
        }
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()) {
            Ok(c) => slot.get_or_init(|| c).clone(),
            Err(_) => self.conn.clone(),
        }
    }

    /// The admission script over `keys`, `args` four per key (see `ADMIT`).
    pub async fn admit(
        &self,
        keys: &[String],
        args: &[u64],
        limit: Duration,
        monitor: bool,
    ) -> Result<Vec<i64>, Failure> {
        let mut inv = self.admit.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        for a in args {
            inv.arg(*a);
        }
        let mut conn = if monitor {
            self.conn.clone()
        } else {
            self.worker_conn()
        };
        self.bounded(limit, async move { inv.invoke_async(&mut conn).await })
            .await
    }

    /// Adds `tokens` to each budget of `keys` (threes, see `CHARGE`).
    pub async fn charge(
        &self,
        keys: &[String],
        tokens: u64,
        limit: Duration,
    ) -> Result<(), Failure> {
        let mut inv = self.charge.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        inv.arg(tokens);
        let mut conn = self.worker_conn();
        self.bounded(
            limit,
            async move { inv.invoke_async::<i64>(&mut conn).await },
        )
        .await
        .map(|_| ())
    }

    /// PING on the monitor's connection (how long it took: Redis's own round trip), then on
    /// every worker's made so far, so each one reconnects, and Redis counts as back only once
    /// all of them answer.
    pub async fn ping(&self, limit: Duration) -> Result<Duration, Failure> {
        let start = Instant::now();
        self.ping_on(self.conn.clone(), limit).await?;
        let rtt = start.elapsed();
        for c in self.per_worker.iter().filter_map(OnceLock::get) {
            self.ping_on(c.clone(), limit).await?;
        }
        Ok(rtt)
    }

    async fn ping_on(&self, mut conn: ConnectionManager, limit: Duration) -> Result<(), Failure> {
        self.bounded(limit, async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await
        .map(|_| ())
    }

    async fn bounded<T>(
        &self,
        limit: Duration,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(limit, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_timeout() => Err(Failure {
                kind: "timeout",
                message: format!("no answer within {}", crate::config::show_duration(limit)),
            }),
            Ok(Err(e)) => Err(Failure {
                kind: "error",
                message: self.redact(e.to_string()),
            }),
            Err(_) => Err(Failure {
                kind: "timeout",
                message: format!("no answer within {}", crate::config::show_duration(limit)),
            }),
        }
    }

    fn redact(&self, mut text: String) -> String {
        for h in &self.hidden {
            text = text.replace(h.as_str(), crate::config::secret::REDACTED);
        }
        crate::telemetry::logging::sanitize(&text, 200).into_owned()
    }
}

/// The user name and password of `scheme://user:password@host/...` (empty ones left out).
fn credentials_of(url: &str) -> Vec<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Vec::new();
    };
    userinfo
        .split(':')
        .filter(|s| s.len() >= 3)
        .map(str::to_owned)
        .collect()
}

/// `rediss://` trusts the proxy's `tls:` roots: with only `webpki` (the default) the client's
/// compiled-in Mozilla roots, as for upstreams; with `native` and/or `extra_ca_file`, exactly
/// those certificates (then without the webpki roots: the client takes one root list).
fn root_pem(tls: &TlsPlan) -> Result<Option<Vec<u8>>, String> {
    use base64::Engine as _;
    let mut certs = tls.extra_cas.clone();
    if tls.native {
        let found = rustls_native_certs::load_native_certs();
        certs.extend(found.certs);
    }
    if certs.is_empty() {
        return Ok(None);
    }
    let mut pem = String::new();
    for c in &certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(c.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).map_err(|e| e.to_string())?);
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    Ok(Some(pem.into_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_are_found() {
        assert_eq!(
            super::credentials_of("redis://:s3cret@h:6379/0"),
            vec!["s3cret"]
        );
        assert_eq!(
            super::credentials_of("rediss://user:pw-long@h"),
            vec!["user", "pw-long"]
        );
        assert!(super::credentials_of("redis://h:6379").is_empty());
    }
}
