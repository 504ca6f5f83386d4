//! The status document: what `GET /v1/status` serves, what `raftvip status` prints and what
//! `/metrics` is rendered from. One struct, so the three can never disagree.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::raft::NodeId;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub cluster: String,
    pub node_id: NodeId,
    pub version: String,
    pub role: RaftRole,
    /// The leader this node follows (itself when leading); None when it has heard no leader
    /// for a second, whatever its stored vote names.
    pub leader_id: Option<NodeId>,
    pub term: u64,
    /// Leader only: time since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// Whether this node holds (should hold) the VIPs, and the supervisor's reason.
    pub holds_vips: bool,
    pub decision: String,
    /// Whether this node currently stands in elections.
    pub candidate_for_leader: bool,
    pub healthy: bool,
    /// None on a witness (no HAProxy).
    pub health: Option<HealthStatus>,
    pub maintenance: bool,
    pub vips: Vec<VipStatus>,
    pub peers: Vec<PeerStatus>,
    pub counters: Counters,
    /// How many members the configured cluster may lose and still elect a node that holds
    /// the VIPs (0: no failover, e.g. a pair without a witness; docs/two-box-sites.md).
    #[serde(default)]
    pub voters_may_fail: u64,
    #[serde(default)]
    pub failover_duration: FailoverHistogram,
    /// A planned overlap is in progress: this node stepped down for the successor it asked to
    /// take over and keeps the VIPs until that successor holds them (make-before-break).
    #[serde(default)]
    pub planned_overlap: bool,
    /// This node's planned overlaps as the old holder, step-down to release.
    #[serde(default)]
    pub overlap_duration: FailoverHistogram,
    /// Real-time class and locked memory in effect ([`crate::realtime`]).
    #[serde(default)]
    pub scheduling: crate::realtime::Scheduling,
    /// The replicated membership, this node's place in it and where this box's file differs
    /// (None: a document from an older raftvip).
    #[serde(default)]
    pub membership: Option<MembershipStatus>,
}

/// The membership as this node sees it (see `crate::membership`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MembershipStatus {
    /// This node's standing: voter, learner, waiting to be added, leaving or removed.
    pub standing: String,
    /// The replicated voter sets (two while a change is in progress: old, then new).
    pub voters: Vec<Vec<NodeId>>,
    pub learners: Vec<NodeId>,
    /// The ids of this box's `[[peer]]` list.
    pub file: Vec<NodeId>,
    /// Where the file and the replicated membership differ (empty: they agree).
    pub differences: Vec<String>,
}

/// This node's Raft state as status and metrics show it: openraft's server state, except that
/// a witness's follower state shows as `witness` (it never becomes a candidate). The member
/// role a node is configured with is [`crate::config::MemberRole`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RaftRole {
    Leader,
    Follower,
    Candidate,
    Learner,
    Witness,
    Shutdown,
}

impl RaftRole {
    pub const ALL: [RaftRole; 6] = [
        RaftRole::Leader,
        RaftRole::Follower,
        RaftRole::Candidate,
        RaftRole::Learner,
        RaftRole::Witness,
        RaftRole::Shutdown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RaftRole::Leader => "leader",
            RaftRole::Follower => "follower",
            RaftRole::Candidate => "candidate",
            RaftRole::Learner => "learner",
            RaftRole::Witness => "witness",
            RaftRole::Shutdown => "shutdown",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealthStatus {
    pub healthy: bool,
    /// Why unhealthy; when healthy, None or why the verdict is kept without a check.
    pub reason: Option<String>,
    /// Age of the last completed check.
    pub last_check_age_ms: Option<u64>,
    pub check_latency_us: u64,
    pub transitions: u64,
    pub checks: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VipStatus {
    pub address: String,
    pub interface: String,
    pub held: bool,
    /// Unix time in ms since when it is held.
    pub held_since_unix_ms: Option<u64>,
    pub announcements_sent: u64,
    pub re_adds: u64,
    pub duplicates: u64,
    /// Frames clients sent here for it after this node released it, passed on to the
    /// successor / dropped (the handover relay).
    #[serde(default)]
    pub relayed_frames: u64,
    #[serde(default)]
    pub relay_dropped_frames: u64,
    /// The last error binding/announcing it (interface missing, no permission, …).
    pub error: Option<String>,
    /// Time left before the kernel drops it unless renewed (`[vip_lease]`; None: not held, or
    /// bound without a lifetime).
    #[serde(default)]
    pub lease_remaining_ms: Option<u64>,
    /// Times its lease ran out while this node held it (the VIP thread was stalled); each
    /// was re-added.
    #[serde(default)]
    pub lease_expiries: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerStatus {
    pub id: NodeId,
    pub address: String,
    /// Age of the last successful exchange with this peer (None: never, or this node).
    pub last_contact_ms: Option<u64>,
    pub maintenance: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    pub leader_changes: u64,
    /// Rejected peer requests, by reason.
    pub rejected_requests: u64,
    /// Times a peer answered HTTP but not its heartbeat datagram, so its heartbeats went over
    /// HTTP for a while (UDP blocked to its port, an older raftvip, a lost datagram).
    #[serde(default)]
    pub heartbeat_fallbacks: u64,
    pub handovers: u64,
    pub fence_releases: u64,
    /// Planned overlaps this node went through as the old holder.
    #[serde(default)]
    pub planned_overlaps: u64,
}

/// Upper bounds (seconds) of the failover-duration buckets; a last bucket takes the rest.
/// They span a tuned LAN failover (~0.1 s) to a slow one (seconds).
pub const FAILOVER_BUCKETS: [f64; 9] = [0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0];

/// Failovers as seen by this node when it took the VIPs over: the time from the last append
/// it accepted from the previous leader to holding the VIPs. Kept as counts, not samples, so
/// the document stays small; `/metrics` renders it as `raftvip_failover_duration_seconds`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FailoverHistogram {
    /// Observations per bucket (not cumulative): one per [`FAILOVER_BUCKETS`] bound, then +Inf.
    pub buckets: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Default for FailoverHistogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; FAILOVER_BUCKETS.len() + 1],
            sum_seconds: 0.0,
            count: 0,
        }
    }
}

impl FailoverHistogram {
    pub fn observe(&mut self, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        let i = FAILOVER_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(FAILOVER_BUCKETS.len());
        self.buckets.resize(FAILOVER_BUCKETS.len() + 1, 0);
        self.buckets[i] += 1;
        self.sum_seconds += secs;
        self.count += 1;
    }
}

impl Status {
    /// A short human summary for `raftvip status`.
    pub fn render_text(&self) -> String {
        self.render_text_with(false)
    }

    /// Counts over the VIPs, for the summary line and the metrics.
    pub fn vip_summary(&self) -> VipSummary {
        VipSummary {
            configured: self.vips.len(),
            held: self.vips.iter().filter(|v| v.held).count(),
            failing: self.vips.iter().filter(|v| v.error.is_some()).count(),
        }
    }

    /// [`Self::render_text`], with a line for every VIP when `all_vips` (`status --vips`).
    pub fn render_text_with(&self, all_vips: bool) -> String {
        let mut out = String::new();
        self.render_node(&mut out);
        self.render_vips(&mut out, all_vips);
        self.render_peers(&mut out);
        self.render_membership(&mut out);
        out
    }

    /// The membership line, and each difference between the file and the cluster.
    fn render_membership(&self, out: &mut String) {
        let Some(m) = &self.membership else {
            return;
        };
        let voters: Vec<String> = m.voters.iter().map(|c| format!("{c:?}")).collect();
        let _ = writeln!(
            out,
            "membership {}{}  this node: {}",
            voters.join(" -> "),
            if m.learners.is_empty() {
                String::new()
            } else {
                format!("  learners {:?}", m.learners)
            },
            m.standing
        );
        for difference in &m.differences {
            let _ = writeln!(out, "  file differs: {difference}");
        }
    }

    /// Role, health, the verdict on the VIPs and fault tolerance.
    fn render_node(&self, out: &mut String) {
        let leader = self
            .leader_id
            .map_or_else(|| "none".to_owned(), |id| id.to_string());
        let _ = writeln!(
            out,
            "cluster {}  node {}  role {}  leader {}  term {}",
            self.cluster,
            self.node_id,
            self.role.name(),
            leader,
            self.term
        );
        let _ = writeln!(
            out,
            "health {}{}",
            self.health_text(),
            if self.maintenance {
                "  (MAINTENANCE)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "vips {}: {}",
            if self.holds_vips { "held" } else { "not held" },
            self.decision
        );
        if let Some(ms) = self.millis_since_quorum_ack {
            let _ = writeln!(out, "quorum acknowledged {ms} ms ago");
        }
        let _ = writeln!(
            out,
            "voters that may fail: {}{}",
            self.voters_may_fail,
            if self.voters_may_fail == 0 {
                " (NO FAILOVER: losing a member leaves no holder; see docs/two-box-sites.md)"
            } else {
                ""
            }
        );
        let _ = writeln!(out, "scheduling: {}", self.scheduling.describe());
        for problem in &self.scheduling.problems {
            let _ = writeln!(out, "  {problem}");
        }
    }

    fn health_text(&self) -> String {
        match &self.health {
            None => "not checked (witness, or no [haproxy] configured)".to_owned(),
            Some(h) if h.healthy => match &h.reason {
                // A healthy verdict kept while checks cannot run (see health::LOCAL_ERROR_HOLD).
                Some(held) => format!("healthy ({held})"),
                None => "healthy".to_owned(),
            },
            Some(h) => format!(
                "UNHEALTHY: {}",
                h.reason.as_deref().unwrap_or("no verdict yet")
            ),
        }
    }

    /// The VIP counts, then each VIP (few, or `all_vips`) or only the failing ones.
    fn render_vips(&self, out: &mut String, all_vips: bool) {
        let summary = self.vip_summary();
        let _ = writeln!(
            out,
            "vips {} configured, {} held, {} failing",
            summary.configured, summary.held, summary.failing
        );
        // Few VIPs: all of them; many: only the failing ones (all with `status --vips`).
        let shown: Vec<&VipStatus> = if all_vips || self.vips.len() <= VIP_LINES {
            self.vips.iter().collect()
        } else {
            self.vips.iter().filter(|v| v.error.is_some()).collect()
        };
        for vip in shown
            .iter()
            .take(if all_vips { usize::MAX } else { VIP_LINES })
        {
            let _ = writeln!(
                out,
                "  {} on {}: {}{}{}  announcements {}  re-adds {}  duplicates {}  relayed {}",
                vip.address,
                vip.interface,
                if vip.held { "HELD" } else { "released" },
                vip.lease_remaining_ms
                    .map(|ms| format!(" (lease {ms} ms left, {} expired)", vip.lease_expiries))
                    .unwrap_or_default(),
                vip.error
                    .as_deref()
                    .map(|e| format!(" (error: {e})"))
                    .unwrap_or_default(),
                vip.announcements_sent,
                vip.re_adds,
                vip.duplicates,
                vip.relayed_frames
            );
        }
        if !all_vips && self.vips.len() > VIP_LINES {
            let _ = writeln!(out, "  (each VIP: raftvip status --vips)");
        }
    }

    fn render_peers(&self, out: &mut String) {
        let _ = writeln!(out, "peers:");
        for peer in &self.peers {
            // Followers exchange nothing between elections, so on a follower another
            // follower's last contact is old without anything being wrong.
            let quiet = if self.role != RaftRole::Leader && Some(peer.id) != self.leader_id {
                " (followers talk to each other only in elections)"
            } else {
                ""
            };
            let contact = match (peer.id == self.node_id, peer.last_contact_ms) {
                (true, _) => "this node".to_owned(),
                (false, Some(ms)) => format!("last contact {ms} ms ago{quiet}"),
                (false, None) => format!("no contact yet{quiet}"),
            };
            let _ = writeln!(
                out,
                "  {} {}  {contact}{}",
                peer.id,
                peer.address,
                if peer.maintenance {
                    "  maintenance"
                } else {
                    ""
                }
            );
        }
    }
}

/// Up to this many VIPs, `raftvip status` lists each; beyond, only the failing ones.
const VIP_LINES: usize = 8;

/// VIP counts for a box with many VIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipSummary {
    pub configured: usize,
    pub held: usize,
    pub failing: usize,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Status {
        Status {
            cluster: "lb".into(),
            node_id: 1,
            version: "0.1.0".into(),
            role: RaftRole::Leader,
            leader_id: Some(1),
            term: 7,
            millis_since_quorum_ack: Some(12),
            holds_vips: true,
            decision: "leader with quorum and healthy HAProxy".into(),
            candidate_for_leader: true,
            healthy: true,
            health: Some(HealthStatus {
                healthy: true,
                reason: None,
                last_check_age_ms: Some(40),
                check_latency_us: 310,
                transitions: 1,
                checks: 99,
            }),
            maintenance: false,
            vips: vec![VipStatus {
                address: "192.0.2.100/32".into(),
                interface: "eth0".into(),
                held: true,
                held_since_unix_ms: Some(1),
                announcements_sent: 6,
                re_adds: 1,
                duplicates: 0,
                relayed_frames: 3,
                relay_dropped_frames: 0,
                error: None,
                lease_remaining_ms: Some(700),
                lease_expiries: 0,
            }],
            peers: vec![
                PeerStatus {
                    id: 1,
                    address: "192.0.2.11:7480".into(),
                    last_contact_ms: None,
                    maintenance: false,
                },
                PeerStatus {
                    id: 2,
                    address: "192.0.2.12:7480".into(),
                    last_contact_ms: Some(18),
                    maintenance: true,
                },
            ],
            counters: Counters {
                leader_changes: 2,
                rejected_requests: 3,
                heartbeat_fallbacks: 2,
                handovers: 0,
                fence_releases: 0,
                planned_overlaps: 0,
            },
            voters_may_fail: 1,
            failover_duration: FailoverHistogram::default(),
            planned_overlap: false,
            overlap_duration: FailoverHistogram::default(),
            scheduling: crate::realtime::Scheduling::default(),
            membership: Some(MembershipStatus {
                standing: "voter".into(),
                voters: vec![vec![1, 2]],
                learners: vec![],
                file: vec![1, 2],
                differences: vec![],
            }),
        }
    }

    #[test]
    fn text_shows_the_membership_and_where_the_file_differs() {
        assert!(sample()
            .render_text()
            .contains("membership [1, 2]  this node: voter\n"));
        let changing = Status {
            membership: Some(MembershipStatus {
                standing: "voter".into(),
                voters: vec![vec![1, 2], vec![1, 2, 3]],
                learners: vec![4],
                file: vec![1, 2, 3, 4],
                differences: vec!["node 4 is in the file but only a learner (catching up)".into()],
            }),
            ..sample()
        };
        let text = changing.render_text();
        assert!(
            text.contains("membership [1, 2] -> [1, 2, 3]  learners [4]  this node: voter\n"),
            "{text}"
        );
        assert!(
            text.contains("  file differs: node 4 is in the file but only a learner"),
            "{text}"
        );
    }

    #[test]
    fn a_document_from_an_older_peer_parses_with_no_failovers() {
        let mut json = serde_json::to_value(sample()).unwrap();
        json.as_object_mut().unwrap().remove("failover_duration");
        let status: Status = serde_json::from_value(json).unwrap();
        assert_eq!(status.failover_duration, FailoverHistogram::default());
    }

    #[test]
    fn json_round_trips() {
        let status = sample();
        let json = serde_json::to_string(&status).unwrap();
        assert!(json.contains("\"role\":\"leader\""));
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), status);
    }

    #[test]
    fn text_summary_names_what_matters() {
        let text = sample().render_text();
        assert!(text.contains("role leader  leader 1  term 7"), "{text}");
        assert!(
            text.contains("192.0.2.100/32 on eth0: HELD (lease 700 ms left, 0 expired)"),
            "{text}"
        );
        assert!(
            text.contains("2 192.0.2.12:7480  last contact 18 ms ago  maintenance"),
            "{text}"
        );
        assert!(text.contains("voters that may fail: 1\n"), "{text}");
        let follower = Status {
            node_id: 3,
            role: RaftRole::Follower,
            ..sample()
        }
        .render_text();
        assert!(
            follower.contains("1 192.0.2.11:7480  no contact yet\n"),
            "the leader: {follower}"
        );
        assert!(
            follower.contains(
                "2 192.0.2.12:7480  last contact 18 ms ago (followers talk to each other only in elections)  maintenance"
            ),
            "another follower: {follower}"
        );
        let pair = Status {
            voters_may_fail: 0,
            ..sample()
        };
        assert!(
            pair.render_text()
                .contains("voters that may fail: 0 (NO FAILOVER"),
            "{text}"
        );
    }

    #[test]
    fn many_vips_read_as_a_summary_with_the_failing_ones() {
        let mut status = sample();
        let template = status.vips[0].clone();
        status.vips = (0..200)
            .map(|i| VipStatus {
                address: format!("198.51.100.{}/32", i + 1),
                error: (i == 7).then(|| "interface eth9 missing".to_owned()),
                held: i != 7,
                lease_remaining_ms: None,
                ..template.clone()
            })
            .collect();
        let text = status.render_text();
        assert!(
            text.contains("vips 200 configured, 199 held, 1 failing"),
            "{text}"
        );
        assert!(
            text.contains("198.51.100.8/32 on eth0: released (error: interface eth9 missing)"),
            "{text}"
        );
        assert!(!text.contains("198.51.100.1/32"), "{text}");
        assert!(text.lines().count() < 20, "{text}");
        let all = status.render_text_with(true);
        assert_eq!(
            all.lines().filter(|l| l.contains(" on eth0: ")).count(),
            200
        );
    }
}
