//! The flags of `auditship simulate`, flattened into the main binary's subcommand.

use std::net::SocketAddr;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::{SimConfig, Vendor};

/// Options of the vendor API simulator (`auditship simulate`).
#[derive(clap::Args, Clone, Debug)]
pub struct SimArgs {
    /// Address to serve all four emulated APIs on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8480")]
    pub listen: SocketAddr,
    /// Seed of the generated events: the same seed gives the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Events per vendor over the whole span.
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    /// How far back from now events reach, e.g. "7d", "90m".
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub span: Duration,
    /// Live mode: the span also runs this far into the future, so events keep appearing as
    /// time passes.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub live: Option<Duration>,
    /// Vendors that get events (the others serve empty results), comma-separated (default:
    /// all of them).
    #[arg(long, value_delimiter = ',', value_name = "VENDORS")]
    pub vendors: Vec<String>,
    /// Fraction (0–1) of events that become visible late.
    #[arg(long, default_value_t = 0.0)]
    pub late_fraction: f64,
    /// Longest delay of a late event.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub late_max: Duration,
    /// Fraction (0–1) of Domo and Domino entries that get an identical twin.
    #[arg(long, default_value_t = 0.02)]
    pub twin_fraction: f64,
    /// Domo's own flags (zone, tokens, client), which its emulator file declares.
    #[command(flatten)]
    domo: crate::domo::DomoArgs,
    /// API key accepted by Domino and Wasabi AiR.
    #[arg(long, default_value = "sim-api-key")]
    pub api_key: String,
    /// Query end bounds include events at exactly the end instant (the docs do not say).
    #[arg(long)]
    pub inclusive_end: bool,
    /// Entries that share a time come in a new random order in every response.
    #[arg(long)]
    pub shuffle_ties: bool,
    /// Responses are not sorted by time (a fixed order of the emulator's own).
    #[arg(long)]
    pub unsorted: bool,
    /// Time every request to a vendor endpoint (Domo's token endpoint included) waits before it
    /// is answered, e.g. "20ms", to make the emulator behave like a remote API.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// Serve every data body pretty-printed (newlines, indentation, `": "`), as a vendor or
    /// gateway that formats its JSON does; the content stays the same.
    #[arg(long)]
    pub pretty: bool,
    /// Requests a second each credential may make; past it, 429 with `Retry-After` (default:
    /// no limit).
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<f64>,
}

impl SimArgs {
    /// The simulator configuration these flags describe, or every problem found, joined by "; ".
    pub fn to_config(&self) -> Result<SimConfig, String> {
        let mut problems = Vec::new();
        let mut vendors = Vec::new();
        if self.vendors.is_empty() {
            vendors = Vendor::ALL.to_vec();
        }
        for name in &self.vendors {
            match Vendor::parse(name) {
                Some(v) if !vendors.contains(&v) => vendors.push(v),
                Some(_) => {}
                None => problems.push(format!(
                    "--vendors: unknown vendor {name:?} (expected one of {})",
                    Vendor::names()
                )),
            }
        }
        for (flag, v) in [
            ("--late-fraction", self.late_fraction),
            ("--twin-fraction", self.twin_fraction),
        ] {
            if !(0.0..=1.0).contains(&v) {
                problems.push(format!("{flag}: must be between 0 and 1, got {v}"));
            }
        }
        let domo = self.domo.check(&mut problems);
        let live = self.live.unwrap_or_default();
        if self.span.is_zero() && live.is_zero() {
            problems.push("--span: must be positive unless --live is given".to_string());
        }
        // Both ends must stay within the instants a time can hold (years -9999 to 9999).
        let now = Timestamp::now();
        let span = SignedDuration::try_from(self.span)
            .ok()
            .and_then(|d| now.checked_sub(d).ok());
        let ahead = SignedDuration::try_from(live)
            .ok()
            .and_then(|d| now.checked_add(d).ok());
        if span.is_none() || ahead.is_none() {
            problems.push("--span/--live: too long".to_string());
        }
        if self.rate_limit.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            problems.push("--rate-limit: must be a number above 0".to_string());
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(SimConfig {
            seed: self.seed,
            start: span.unwrap_or(now),
            end: ahead.unwrap_or(now),
            events: self.events,
            vendors,
            late_fraction: self.late_fraction,
            late_max: self.late_max,
            twin_fraction: self.twin_fraction,
            domo_time_zone: domo.time_zone,
            domo_token_ttl: domo.token_ttl,
            api_key: self.api_key.clone(),
            more_api_keys: Vec::new(),
            domo_client_id: domo.client_id,
            domo_client_secret: domo.client_secret,
            answers: crate::Answers {
                inclusive_end: self.inclusive_end,
                shuffle_ties: self.shuffle_ties,
                unsorted: self.unsorted,
            },
            latency: self.latency,
            pretty: self.pretty,
            rate_limit: self.rate_limit,
            clock: None,
        })
    }

    /// The address to listen on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    fn parse(args: &[&str]) -> SimArgs {
        Cli::try_parse_from(std::iter::once("simulate").chain(args.iter().copied()))
            .unwrap()
            .sim
    }

    #[test]
    fn defaults_match_sim_config_defaults() {
        let a = parse(&[]);
        assert_eq!(a.listen().to_string(), "127.0.0.1:8480");
        let c = a.to_config().unwrap();
        let d = SimConfig::default();
        assert_eq!(c.seed, d.seed);
        assert_eq!(c.events, d.events);
        assert_eq!(c.vendors, d.vendors);
        assert_eq!(c.twin_fraction, d.twin_fraction);
        assert_eq!(c.domo_token_ttl, d.domo_token_ttl);
        assert_eq!(c.api_key, d.api_key);
        assert_eq!(c.latency, d.latency);
        assert_eq!(c.pretty, d.pretty);
        assert_eq!(c.end.duration_since(c.start).as_hours(), 7 * 24);
    }

    #[test]
    fn flags_build_a_config() {
        let a = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "9",
            "--events",
            "10",
            "--span",
            "2h",
            "--live",
            "30m",
            "--vendors",
            "domo,wasabi_air",
            "--late-fraction",
            "0.5",
            "--late-max",
            "10s",
            "--domo-time-zone",
            "America/Denver",
            "--domo-token-ttl",
            "60s",
            "--latency",
            "20ms",
            "--pretty",
            "--rate-limit",
            "4",
        ]);
        let c = a.to_config().unwrap();
        assert_eq!(c.vendors, vec![Vendor::Domo, Vendor::WasabiAir]);
        assert_eq!(c.domo_time_zone.iana_name(), Some("America/Denver"));
        assert_eq!(c.late_max, Duration::from_secs(10));
        assert_eq!(c.domo_token_ttl, Duration::from_secs(60));
        assert_eq!(c.latency, Duration::from_millis(20));
        assert!(c.pretty);
        assert_eq!(c.rate_limit, Some(4.0));
        assert_eq!(c.end.duration_since(c.start).as_mins(), 150);
        assert!(c.end > Timestamp::now());
    }

    #[test]
    fn bad_flags_are_all_reported() {
        let a = parse(&[
            "--vendors",
            "domo,okta",
            "--twin-fraction",
            "2",
            "--domo-time-zone",
            "Mars/Olympus",
        ]);
        let e = a.to_config().unwrap_err();
        assert!(
            e.contains("okta") && e.contains("--twin-fraction") && e.contains("Mars/Olympus"),
            "{e}"
        );
    }
}
