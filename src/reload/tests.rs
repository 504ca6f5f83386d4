use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;
use crate::peer::wire::MembershipOutcome;
use crate::status::VipStatus;

/// Node 1 of a three-box cluster with one VIP and HAProxy; `extra` is appended (later keys
/// of a table need their table header, so callers append whole tables).
fn text(vips: &[&str], extra: &str) -> String {
    let mut text = String::from(
        "cluster = \"lb\"\nnode_id = 1\nlisten = \"192.0.2.11:7480\"\n\
         data_dir = \"/var/lib/raftvip\"\nsecret_file = \"/etc/raftvip/secret\"\n\
         [[peer]]\nid = 1\naddress = \"192.0.2.11:7480\"\n\
         [[peer]]\nid = 2\naddress = \"192.0.2.12:7480\"\n\
         [[peer]]\nid = 3\naddress = \"192.0.2.13:7480\"\n\
         [haproxy]\nstats_socket = \"/run/haproxy/admin.sock\"\n",
    );
    for vip in vips {
        text.push_str(&format!(
            "[[vip]]\naddress = \"{vip}\"\ninterface = \"eth0\"\n"
        ));
    }
    text.push_str(extra);
    text
}

fn config(vips: &[&str], extra: &str) -> Config {
    Config::parse(&text(vips, extra)).unwrap()
}

fn base() -> Config {
    config(&["192.0.2.100/32"], "")
}

/// The keys named in a rejection, in order.
fn rejected_keys(problems: &[String]) -> Vec<&str> {
    problems
        .iter()
        .map(|p| p.split(':').next().unwrap())
        .collect()
}

#[test]
fn the_same_file_changes_nothing() {
    assert_eq!(plan(&base(), &base(), true), Ok(Plan::default()));
}

#[test]
fn vips_added_and_removed_are_applied_live() {
    let new = config(&["192.0.2.101/32", "192.0.2.102/32"], "");
    let plan = plan(&base(), &new, true).unwrap();
    assert!(plan.vips && plan.notify, "{plan:?}");
    assert!(!plan.supervisor && !plan.haproxy, "{plan:?}");
    assert_eq!(
        plan.changes,
        [
            "vip 192.0.2.100/32 on eth0: removed (released if held)",
            "vip 192.0.2.101/32 on eth0: added (bound at once if held)",
            "vip 192.0.2.102/32 on eth0: added (bound at once if held)",
        ]
    );
}

#[test]
fn a_vip_moved_to_another_interface_is_removed_and_added() {
    let moved = Config::parse(
        &(text(&[], "") + "[[vip]]\naddress = \"192.0.2.100/32\"\ninterface = \"eth1\"\n"),
    )
    .unwrap();
    let plan = plan(&base(), &moved, true).unwrap();
    assert_eq!(
        plan.changes,
        [
            "vip 192.0.2.100/32 on eth0: removed (released if held)",
            "vip 192.0.2.100/32 on eth1: added (bound at once if held)",
        ]
    );
}

#[test]
fn every_restart_only_change_is_named_in_one_rejection() {
    let new = Config::parse(
        &text(&["192.0.2.100/32"], "[timing]\nheartbeat_ms = 10\n")
            .replace("cluster = \"lb\"", "cluster = \"lb2\"")
            .replace("listen = \"192.0.2.11:7480\"", "listen = \"0.0.0.0:7480\"")
            .replace("/var/lib/raftvip", "/srv/raftvip"),
    )
    .unwrap();
    let problems = plan(&base(), &new, false).unwrap_err();
    assert_eq!(
        rejected_keys(&problems),
        [
            "cluster",
            "listen",
            "data_dir",
            "timing.heartbeat_ms",
            "secret_file"
        ]
    );
    assert!(
        problems[3].contains("openraft 0.9.25 fixes its heartbeat and election timing"),
        "{problems:?}"
    );
}

#[test]
fn a_changed_secret_alone_needs_a_restart() {
    let problems = plan(&base(), &base(), false).unwrap_err();
    assert_eq!(rejected_keys(&problems), ["secret_file"]);
}

#[test]
fn openraft_timing_needs_a_restart_but_the_fence_reloads_live() {
    let et = config(
        &["192.0.2.100/32"],
        "[timing]\nelection_timeout_ms = [70, 100]\n",
    );
    assert_eq!(
        rejected_keys(&plan(&base(), &et, true).unwrap_err()),
        ["timing.election_timeout_ms"]
    );
    let fence = config(&["192.0.2.100/32"], "[timing]\nfence_ms = 60\n");
    let plan = plan(&base(), &fence, true).unwrap();
    assert!(plan.supervisor && !plan.vips, "{plan:?}");
    assert_eq!(plan.changes, ["timing.fence_ms: 80 -> 60"]);
}

#[test]
fn a_changed_peer_list_goes_to_the_membership() {
    let fourth = "[[peer]]\nid = 4\naddress = \"192.0.2.14:7480\"\n";
    let new = Config::parse(&text(&["192.0.2.100/32"], fourth)).unwrap();
    let plan = plan(&base(), &new, true).unwrap();
    assert!(plan.members && plan.supervisor && !plan.vips, "{plan:?}");
    assert!(
        plan.changes[0].starts_with("peer: [1, 2, 3] -> [1, 2, 3, 4]"),
        "{plan:?}"
    );
    assert!(!super::plan(&base(), &base(), true).unwrap().members);
}

/// `raftvip reload` answers with what the membership change made of the list; a reload that
/// leaves the list alone starts none.
#[tokio::test]
async fn a_reload_hands_over_its_membership_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &["192.0.2.100/32"], false);
    let asked = Arc::new(Mutex::new(Vec::new()));
    let members: crate::membership::OnReload = {
        let asked = asked.clone();
        Box::new(move |peers| {
            let ids: Vec<crate::raft::NodeId> = peers.iter().map(|p| p.id).collect();
            crate::sync::lock(&asked).push(ids.clone());
            Box::pin(std::future::ready(MembershipOutcome::Applied(vec![ids])))
        })
    };
    let (reloader, _) = reloader_of(&path, Arc::default(), members);
    assert!(reloader.reload().membership.is_none());

    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{text}\n[[peer]]\nid = 4\naddress = \"192.0.2.14:7480\"\n"),
    )
    .unwrap();
    let reloaded = reloader.reload();
    assert!(reloaded.outcome.accepted(), "{:?}", reloaded.outcome);
    let change = reloaded
        .membership
        .expect("a changed [[peer]] list starts a change");
    assert_eq!(
        change.await,
        MembershipOutcome::Applied(vec![vec![1, 2, 3, 4]])
    );
    assert_eq!(*crate::sync::lock(&asked), [vec![1, 2, 3, 4]]);
}

#[test]
fn haproxy_settings_reload_but_adding_or_removing_the_section_does_not() {
    let new = Config::parse(&text(&["192.0.2.100/32"], "").replace(
        "admin.sock\"\n",
        "admin.sock\"\nrise = 3\nbackends = [\"web\"]\n",
    ))
    .unwrap();
    let plan_ = plan(&base(), &new, true).unwrap();
    assert!(plan_.haproxy, "{plan_:?}");
    assert_eq!(
        plan_.changes,
        ["haproxy: backends [] -> [\"web\"], rise 2 -> 3"]
    );
    let mut without = base();
    without.haproxy = None;
    assert_eq!(
        rejected_keys(&plan(&base(), &without, true).unwrap_err()),
        ["haproxy"]
    );
}

#[test]
fn a_voter_becoming_a_witness_hands_over_instead_of_dropping_its_vips() {
    let witness = Config::parse(
        &text(&["192.0.2.100/32"], "")
            .replace("node_id = 1\n", "node_id = 1\nrole = \"witness\"\n"),
    )
    .unwrap();
    let plan_ = plan(&base(), &witness, true).unwrap();
    assert!(plan_.supervisor, "{plan_:?}");
    assert_eq!(
        plan_.changes,
        ["role: voter -> witness (this node no longer stands; if it holds the VIPs it hands them over)"]
    );
    // And back needs a restart: a witness started without a VIP thread.
    assert_eq!(
        rejected_keys(&plan(&witness, &base(), true).unwrap_err()),
        ["role"]
    );
}

#[test]
fn announce_hooks_and_reconcile_reload_live() {
    let new = config(
        &["192.0.2.100/32"],
        "[timing]\nreconcile_ms = 500\n[announce]\nburst_count = 5\n\
         [notify]\nscript = \"/etc/raftvip/notify.sh\"\n",
    );
    let plan = plan(&base(), &new, true).unwrap();
    assert!(plan.vips && plan.notify && !plan.supervisor, "{plan:?}");
    assert_eq!(
        plan.changes,
        [
            "announce: burst_count 3 -> 5",
            "timing.reconcile_ms: 1000 -> 500",
            "notify: hooks replaced (events from now on use them)",
        ]
    );
}

/// Records what a reload hands the VIP layer.
#[derive(Default)]
struct RecordingVips {
    sets: Mutex<Vec<VipSet>>,
}

impl VipHolder for RecordingVips {
    fn set_held(&self, _hold: bool, _reason: &str) {}
    fn status(&self) -> Vec<VipStatus> {
        Vec::new()
    }
    fn set_vips(&self, set: VipSet) {
        crate::sync::lock(&self.sets).push(set);
    }
}

/// A reloader of the file at `path` (loaded now) whose VIP changes go to `vips` and
/// membership changes to `members`; with the supervisor setup it publishes.
fn reloader_of(
    path: &Path,
    vips: Arc<RecordingVips>,
    members: crate::membership::OnReload,
) -> (Reloader, watch::Receiver<Setup>) {
    let (running, secret) = Config::load(path).unwrap();
    let (supervisor, setup) = watch::channel(Setup::from_config(&running));
    let live = Live {
        vips,
        haproxy: None,
        notifier: Arc::new(Notifier::new(&running)),
        supervisor,
        members,
    };
    (Reloader::new(path, Arc::new(running), secret, live), setup)
}

/// Membership changes that report themselves still under way (for tests whose `[[peer]]`
/// list stays).
fn no_membership() -> crate::membership::OnReload {
    Box::new(|_| Box::pin(std::future::ready(MembershipOutcome::Pending)))
}

/// A config file and its secret in `dir`, with `vips`; `broken` appends a problem
/// check-config finds (a VIP listed twice).
fn write_config(dir: &Path, vips: &[&str], broken: bool) -> std::path::PathBuf {
    let secret = dir.join("secret");
    std::fs::write(&secret, "s".repeat(40)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut body = text(vips, "").replace("/etc/raftvip/secret", &secret.display().to_string());
    if broken {
        body.push_str(&format!(
            "[[vip]]\naddress = \"{}\"\ninterface = \"eth0\"\n",
            vips[0]
        ));
    }
    let path = dir.join("raftvip.toml");
    std::fs::write(&path, body).unwrap();
    path
}

#[tokio::test]
async fn a_broken_file_changes_nothing_and_a_good_one_is_applied_against_the_running_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &["192.0.2.100/32"], false);
    let vips = Arc::new(RecordingVips::default());
    let (reloader, setup) = reloader_of(&path, vips.clone(), no_membership());

    write_config(dir.path(), &["192.0.2.101/32"], true);
    let outcome = reloader.reload().outcome;
    assert!(!outcome.accepted());
    assert!(outcome.applied.is_empty());
    assert!(
        outcome
            .problems
            .iter()
            .any(|p| p.starts_with("vip[1].address: 192.0.2.101 is listed twice")),
        "{outcome:?}"
    );
    assert!(crate::sync::lock(&vips.sets).is_empty());

    write_config(dir.path(), &["192.0.2.100/32", "192.0.2.101/32"], false);
    let outcome = reloader.reload().outcome;
    assert_eq!(
        outcome.applied,
        ["vip 192.0.2.101/32 on eth0: added (bound at once if held)"]
    );
    let sets = crate::sync::lock(&vips.sets);
    let addresses: Vec<String> = sets[0].vips.iter().map(|v| v.address.to_string()).collect();
    assert_eq!(addresses, ["192.0.2.100/32", "192.0.2.101/32"]);
    assert!(!setup.has_changed().unwrap(), "the setup did not change");
}

#[tokio::test]
async fn a_reload_of_another_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &["192.0.2.100/32"], false);
    let (reloader, _) = reloader_of(&path, Arc::default(), no_membership());
    let outcome = reloader.reload_file("/etc/other.toml").outcome;
    assert!(outcome.problems[0].starts_with(&format!(
        "this daemon runs from {}, not /etc/other.toml",
        path.display()
    )));
    assert!(reloader
        .reload_file(&path.display().to_string())
        .outcome
        .accepted());
}

#[test]
fn the_scheduling_class_and_locked_memory_need_a_restart() {
    let new = Config::parse(&text(
        &["192.0.2.100/32"],
        "[process]\nrealtime_priority = 0\nlock_memory = false\n",
    ))
    .unwrap();
    let problems = plan(&base(), &new, true).unwrap_err();
    assert_eq!(
        rejected_keys(&problems),
        ["process.realtime_priority", "process.lock_memory"]
    );
}
