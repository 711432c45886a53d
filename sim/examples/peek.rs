//! Prints a few events of each vendor and times a large generation (development aid).
use auditship_sim::{start, SimConfig, Vendor};

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let vendors = std::env::args()
        .nth(2)
        .map(|v| v.split(',').filter_map(Vendor::parse).collect())
        .unwrap_or_else(|| Vendor::ALL.to_vec());
    let cfg = SimConfig {
        events: n,
        vendors,
        twin_fraction: 0.02,
        domo_time_zone: jiff::tz::TimeZone::get("America/Denver").unwrap(),
        ..SimConfig::default()
    };
    let (from, to) = (cfg.start, cfg.end);
    let t = std::time::Instant::now();
    let s = start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    eprintln!("generated in {:?}", t.elapsed());
    println!("{}", s.url());
    for v in Vendor::ALL {
        let e = s.events(v, from, to);
        println!("{v}: {} events", e.len());
        for x in e.iter().take(2) {
            println!("  {x}");
        }
    }
    if std::env::var("HOLD").is_ok() {
        tokio::time::sleep(std::time::Duration::from_secs(600)).await;
    }
    s.shutdown().await;
}
