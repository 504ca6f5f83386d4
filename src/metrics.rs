//! Prometheus metrics, rendered from the [`Status`] document at scrape time.
//!
//! Every number already lives in the status (counters included), so the exporter keeps no
//! state of its own: a scrape builds a fresh registry from one status snapshot. Scrapes are
//! seconds apart; building a registry of a few dozen series costs microseconds. A node's
//! /metrics adds the standard process metrics ([`crate::process_metrics`]) and the size of
//! each table of per-request state, so growth shows long before it matters.
//!
//! Names follow the Prometheus conventions: the `raftvip_` prefix, base units (durations in
//! `_seconds`, fractional), `_total` on counters (added by the encoder), `_info` for build
//! metadata. An age that does not exist (no check yet, not leader) is -1.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::status::{FailoverHistogram, RaftRole, Status, FAILOVER_BUCKETS};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VipLabel {
    address: String,
    interface: String,
}

/// A VIP and what became of the frames the handover relay saw for it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RelayLabel {
    address: String,
    interface: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

fn float_gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(value);
    registry.register(name, help, g);
}

/// A duration gauge in seconds from a millisecond value; -1 when there is none.
fn seconds(registry: &mut Registry, name: &str, help: &str, millis: Option<u64>) {
    float_gauge(
        registry,
        name,
        help,
        millis.map_or(-1.0, |ms| ms as f64 / 1000.0),
    );
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

/// What a node's /metrics serves: the status, the standard process metrics and the size of
/// each table of per-request state (`raftvip_table_entries{table=...}`).
pub fn render_node(status: &Status, tables: &[(&'static str, usize)]) -> String {
    let mut root = Registry::default();
    let r = root.sub_registry_with_prefix("raftvip");
    register_status(r, status);
    let entries = Family::<TableLabel, Gauge>::default();
    for (table, size) in tables {
        entries
            .get_or_create(&TableLabel { table })
            .set(i64::try_from(*size).unwrap_or(i64::MAX));
    }
    r.register(
        "table_entries",
        "Entries in each table of per-request state (should stay flat over time)",
        entries,
    );
    register_process(&mut root, &crate::process_metrics::sample());
    encode_registry(&root)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: &'static str,
}

fn register_process(r: &mut Registry, sample: &crate::process_metrics::ProcessSample) {
    if let Some(v) = sample.resident_memory_bytes {
        gauge(
            r,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            v as i64,
        );
    }
    if let Some(v) = sample.cpu_seconds {
        let c = Counter::<f64, AtomicU64>::default();
        c.inc_by(v);
        r.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            c,
        );
    }
    if let Some(v) = sample.open_fds {
        gauge(
            r,
            "process_open_fds",
            "Number of open file descriptors",
            v as i64,
        );
    }
    if let Some(v) = sample.start_time_seconds {
        float_gauge(
            r,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            v,
        );
    }
}

fn encode_registry(r: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, r).expect("writing to a String cannot fail");
    out
}

/// Every series the status document holds, in a fixed order.
fn register_status(r: &mut Registry, status: &Status) {
    register_node(r, status);
    register_counters(r, status);
    register_vips(r, status);
    register_cluster(r, status);
    register_scheduling(r, status);
}

/// This node's role, term, leader, verdicts and health checks.
fn register_node(r: &mut Registry, status: &Status) {
    let roles = Family::<RoleLabel, Gauge>::default();
    for role in RaftRole::ALL {
        roles
            .get_or_create(&RoleLabel { role: role.name() })
            .set(i64::from(role == status.role));
    }
    r.register(
        "role",
        "Raft role of this node (1 for the current one)",
        roles,
    );
    gauge(r, "term", "Current Raft term", status.term as i64);
    gauge(
        r,
        "leader_id",
        "Id of the current leader (0: none known)",
        status.leader_id.unwrap_or(0) as i64,
    );
    seconds(
        r,
        "quorum_ack_age_seconds",
        "Leader only: time since a quorum acknowledged it (-1 otherwise)",
        status.millis_since_quorum_ack,
    );
    gauge(
        r,
        "holds_vips",
        "1 if this node holds the VIPs",
        i64::from(status.holds_vips),
    );
    gauge(
        r,
        "candidate",
        "1 if this node stands in elections",
        i64::from(status.candidate_for_leader),
    );
    gauge(
        r,
        "healthy",
        "1 if HAProxy is healthy",
        i64::from(status.healthy),
    );
    gauge(
        r,
        "maintenance",
        "1 if this node is in maintenance",
        i64::from(status.maintenance),
    );
    if let Some(h) = &status.health {
        counter(
            r,
            "health_transitions",
            "Health verdict changes",
            h.transitions,
        );
        counter(r, "health_checks", "HAProxy checks run", h.checks);
        float_gauge(
            r,
            "health_check_duration_seconds",
            "Duration of the last HAProxy check",
            h.check_latency_us as f64 / 1e6,
        );
        seconds(
            r,
            "health_last_check_age_seconds",
            "Age of the last completed HAProxy check (-1: none yet)",
            h.last_check_age_ms,
        );
    }
}

fn register_counters(r: &mut Registry, status: &Status) {
    counter(
        r,
        "leader_changes",
        "Leader changes seen by this node",
        status.counters.leader_changes,
    );
    counter(
        r,
        "rejected_requests",
        "Peer requests rejected as unauthenticated",
        status.counters.rejected_requests,
    );
    counter(
        r,
        "heartbeat_fallbacks",
        "Times a peer answered HTTP but not its heartbeat datagram (UDP, the peer port), so its heartbeats went over HTTP for 30 s",
        status.counters.heartbeat_fallbacks,
    );
    counter(
        r,
        "handovers",
        "Times this leader handed leadership over",
        status.counters.handovers,
    );
    counter(
        r,
        "fence_releases",
        "Times the VIPs were released because the quorum lease ran out",
        status.counters.fence_releases,
    );
    counter(
        r,
        "planned_overlaps",
        "Planned handovers in which this node kept the VIPs until its successor held them",
        status.counters.planned_overlaps,
    );
}

/// Per-VIP series, then totals.
fn register_vips(r: &mut Registry, status: &Status) {
    let held = Family::<VipLabel, Gauge>::default();
    let announcements = Family::<VipLabel, Counter>::default();
    let re_adds = Family::<VipLabel, Counter>::default();
    let duplicates = Family::<VipLabel, Counter>::default();
    let relay = Family::<RelayLabel, Counter>::default();
    let errors = Family::<VipLabel, Gauge>::default();
    for vip in &status.vips {
        let label = VipLabel {
            address: vip.address.clone(),
            interface: vip.interface.clone(),
        };
        held.get_or_create(&label).set(i64::from(vip.held));
        announcements
            .get_or_create(&label)
            .inc_by(vip.announcements_sent);
        re_adds.get_or_create(&label).inc_by(vip.re_adds);
        duplicates.get_or_create(&label).inc_by(vip.duplicates);
        for (outcome, frames) in [
            ("relayed", vip.relayed_frames),
            ("dropped", vip.relay_dropped_frames),
        ] {
            let label = RelayLabel {
                address: label.address.clone(),
                interface: label.interface.clone(),
                outcome,
            };
            relay.get_or_create(&label).inc_by(frames);
        }
        errors
            .get_or_create(&label)
            .set(i64::from(vip.error.is_some()));
    }
    r.register("vip_held", "1 if the VIP is bound on this node", held);
    r.register(
        "vip_announcements",
        "Gratuitous ARP / unsolicited NA frames sent",
        announcements,
    );
    r.register(
        "vip_re_adds",
        "Times the VIP was found missing on the holder and re-added",
        re_adds,
    );
    r.register(
        "vip_duplicates",
        "Times another MAC answered for the VIP",
        duplicates,
    );
    r.register(
        "vip_relay_frames",
        "Frames clients sent here for the VIP after this node released it: passed on to the successor (outcome relayed) or not (dropped)",
        relay,
    );
    r.register(
        "vip_error",
        "1 if binding or announcing the VIP is failing",
        errors,
    );
    // Totals, so a dashboard of a box with hundreds of VIPs needs no per-VIP series.
    let summary = status.vip_summary();
    for (name, help, value) in [
        (
            "vips_configured",
            "VIPs configured on this node",
            summary.configured,
        ),
        ("vips_held", "VIPs bound on this node", summary.held),
        (
            "vips_failing",
            "VIPs whose binding or announcing is failing",
            summary.failing,
        ),
    ] {
        let gauge = Gauge::<i64>::default();
        gauge.set(value as i64);
        r.register(name, help, gauge);
    }
}

/// Peers, build, fault tolerance and failover durations.
fn register_cluster(r: &mut Registry, status: &Status) {
    let contact = Family::<PeerLabel, Gauge<f64, AtomicU64>>::default();
    for peer in status.peers.iter().filter(|p| p.id != status.node_id) {
        contact
            .get_or_create(&PeerLabel {
                peer: peer.id.to_string(),
            })
            .set(peer.last_contact_ms.map_or(-1.0, |ms| ms as f64 / 1000.0));
    }
    r.register(
        "peer_last_contact_age_seconds",
        "Age of the last exchange with each peer (-1: never)",
        contact,
    );

    r.register(
        "build",
        "raftvip build; the version is a label",
        Info::new(vec![("version".to_owned(), status.version.clone())]),
    );
    gauge(
        r,
        "voters_may_fail",
        "Members the configured cluster may lose and still elect a VIP holder (0: no failover)",
        status.voters_may_fail as i64,
    );
    r.register(
        "failover_duration_seconds",
        "Takeovers of the VIPs by this node: time since its last contact with the previous leader",
        StoredHistogram(status.failover_duration.clone()),
    );
    gauge(
        r,
        "planned_overlap",
        "1 while this node keeps the VIPs for its successor in a planned handover",
        i64::from(status.planned_overlap),
    );
    r.register(
        "planned_overlap_duration_seconds",
        "Planned overlaps as the old holder: step-down to release",
        StoredHistogram(status.overlap_duration.clone()),
    );
}

/// A histogram whose counts live in the status document. prometheus-client's `Histogram`
/// only counts its own observations; this encodes stored ones the same way.
#[derive(Debug)]
struct StoredHistogram(FailoverHistogram);

impl EncodeMetric for StoredHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder takes per-bucket counts and writes them cumulatively; f64::MAX is +Inf.
        let bounds = FAILOVER_BUCKETS.iter().copied().chain([f64::MAX]);
        let buckets: Vec<(f64, u64)> = bounds.zip(self.0.buckets.iter().copied()).collect();
        encoder.encode_histogram::<NoLabelSet>(self.0.sum_seconds, self.0.count, &buckets, None)
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

/// The real-time class and locked memory in effect ([`crate::realtime`]).
fn register_scheduling(r: &mut Registry, status: &Status) {
    gauge(
        r,
        "realtime_priority",
        "SCHED_RR priority of the runtime and VIP threads (0: normal scheduling class)",
        i64::from(status.scheduling.realtime_priority),
    );
    gauge(
        r,
        "memory_locked",
        "1 if the daemon's memory is locked (mlockall)",
        i64::from(status.scheduling.memory_locked),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_role_counters_and_vips() {
        let text = render_node(&crate::status::tests::sample(), &[]);
        for line in [
            "raftvip_role{role=\"leader\"} 1",
            "raftvip_role{role=\"follower\"} 0",
            "raftvip_term 7",
            "raftvip_leader_changes_total 2",
            "raftvip_rejected_requests_total 3",
            "raftvip_heartbeat_fallbacks_total 2",
            "raftvip_vip_held{address=\"192.0.2.100/32\",interface=\"eth0\"} 1",
            "raftvip_vip_re_adds_total{address=\"192.0.2.100/32\",interface=\"eth0\"} 1",
            "raftvip_vip_relay_frames_total{address=\"192.0.2.100/32\",interface=\"eth0\",outcome=\"relayed\"} 3",
            "raftvip_vip_relay_frames_total{address=\"192.0.2.100/32\",interface=\"eth0\",outcome=\"dropped\"} 0",
            "raftvip_peer_last_contact_age_seconds{peer=\"2\"} 0.018",
            "raftvip_quorum_ack_age_seconds 0.012",
            "raftvip_health_check_duration_seconds 0.00031",
            "raftvip_health_last_check_age_seconds 0.04",
            "raftvip_build_info{version=\"0.1.0\"} 1",
            "raftvip_voters_may_fail 1",
            "raftvip_vips_configured 1",
            "raftvip_vips_held 1",
            "raftvip_vips_failing 0",
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    /// The shipped dashboard and alert rules use only metrics that exist: a rename here
    /// fails this test until docs/monitoring/ follows.
    #[test]
    fn dashboard_and_alerts_use_existing_metrics() {
        let text = render_node(&crate::status::tests::sample(), &[]);
        for (file, doc) in [
            ("alerts.yml", include_str!("../docs/monitoring/alerts.yml")),
            (
                "grafana-dashboard.json",
                include_str!("../docs/monitoring/grafana-dashboard.json"),
            ),
        ] {
            let mut rest = doc;
            let mut seen = 0;
            while let Some(at) = rest.find("raftvip_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    text.lines().any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                    "{file} uses {name}, which /metrics does not export"
                );
                seen += 1;
                rest = &rest[at + name.len()..];
            }
            assert!(seen > 5, "{file}: only {seen} metric references");
        }
    }

    #[test]
    fn node_metrics_add_process_metrics_and_table_sizes() {
        let text = render_node(
            &crate::status::tests::sample(),
            &[("nonces", 12), ("reject_log", 0)],
        );
        for line in [
            "raftvip_term 7",
            "raftvip_table_entries{table=\"nonces\"} 12",
            "raftvip_table_entries{table=\"reject_log\"} 0",
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn failover_durations_render_as_a_cumulative_histogram() {
        let mut status = crate::status::tests::sample();
        for ms in [80, 120, 120, 7000] {
            status
                .failover_duration
                .observe(std::time::Duration::from_millis(ms));
        }
        let text = render_node(&status, &[]);
        for line in [
            "# TYPE raftvip_failover_duration_seconds histogram",
            "raftvip_failover_duration_seconds_bucket{le=\"0.05\"} 0",
            "raftvip_failover_duration_seconds_bucket{le=\"0.1\"} 1",
            "raftvip_failover_duration_seconds_bucket{le=\"0.15\"} 3",
            "raftvip_failover_duration_seconds_bucket{le=\"5.0\"} 3",
            "raftvip_failover_duration_seconds_bucket{le=\"+Inf\"} 4",
            "raftvip_failover_duration_seconds_sum 7.32",
            "raftvip_failover_duration_seconds_count 4",
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
    }
}
