//! `raftvip import-keepalived`: turns the `vrrp_instance`s of a keepalived.conf into a
//! raftvip.toml, so an operator coming from keepalived starts from their own addresses.
//!
//! keepalived's configuration language (`keyword args… { nested }`, `#`/`!` comments, quoted
//! strings, `include` with wildcards) has no parser crate on crates.io, so this module carries a
//! small one: a line-oriented tokenizer that builds a tree of [`Node`]s, then a converter
//! that reads the few blocks that map (VIPs, interface, unicast peers, a HAProxy
//! `track_script`, notify scripts, `garp_master_refresh`) and writes a comment for every option
//! that has no raftvip equivalent, saying why. Both are pure: files come in through a loader
//! callback, so the tests run against fixtures.
//!
//! Peers are numbered in address order, so converting each box's keepalived.conf (which lists
//! the *other* boxes as `unicast_peer`) yields the same `[[peer]]` list on every box.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// raftvip's default peer port (the one docs/raftvip.example.toml uses).
const DEFAULT_PORT: u16 = 7480;

/// `include` nesting limit: keepalived's own is 8-ish; deeper means an include loop.
const MAX_INCLUDE_DEPTH: usize = 8;

/// One statement: a keyword, its arguments and, for a block, its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub key: String,
    pub args: Vec<String>,
    pub children: Option<Vec<Node>>,
    /// `file:line`, for messages.
    pub at: String,
}

impl Node {
    fn child(&self, key: &str) -> Option<&Node> {
        self.children.iter().flatten().find(|n| n.key == key)
    }
    fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(String::as_str)
    }
    /// The keyword and its arguments as written.
    fn line(&self) -> String {
        std::iter::once(self.key.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    #[error("{at}: unbalanced '}}' (no block is open)")]
    UnbalancedClose { at: String },
    #[error("{at}: block '{key}' is never closed (missing '}}')")]
    Unclosed { at: String, key: String },
    #[error("{at}: unterminated quoted string")]
    UnterminatedQuote { at: String },
    #[error("{at}: includes nest deeper than {MAX_INCLUDE_DEPTH} levels (an include loop?)")]
    IncludeDepth { at: String },
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("no vrrp_instance found: nothing to convert")]
    NoInstance,
}

/// Splits one line into words: `{`/`}` are words of their own, quotes keep spaces, `#` and `!`
/// start a comment (outside quotes).
fn words(line: &str, at: &str) -> Result<Vec<String>, ImportError> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut chars = line.chars();
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            out.push(std::mem::take(word));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '#' | '!' if word.is_empty() => break,
            '"' => {
                let mut quoted = String::new();
                loop {
                    match chars.next() {
                        None => return Err(ImportError::UnterminatedQuote { at: at.into() }),
                        Some('"') => break,
                        Some(c) => quoted.push(c),
                    }
                }
                word.push_str(&quoted);
                // An empty quoted string is still an argument.
                if word.is_empty() {
                    out.push(String::new());
                }
            }
            '{' | '}' => {
                flush(&mut word, &mut out);
                out.push(c.to_string());
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    Ok(out)
}

/// Reads the text of an `include` pattern (relative to the including file's directory): the
/// matching files, in name order. Injected so parsing stays pure.
pub type Loader<'a> = dyn Fn(&Path) -> Result<Vec<(PathBuf, String)>, ImportError> + 'a;

/// Parses keepalived.conf text into a tree, following `include` lines through `load`.
pub fn parse(name: &Path, text: &str, load: &Loader) -> Result<Vec<Node>, ImportError> {
    let mut stack: Vec<Node> = Vec::new();
    let mut top = Vec::new();
    parse_into(name, text, load, 0, &mut stack, &mut top)?;
    if let Some(open) = stack.pop() {
        return Err(ImportError::Unclosed {
            at: open.at,
            key: open.key,
        });
    }
    Ok(top)
}

fn parse_into(
    name: &Path,
    text: &str,
    load: &Loader,
    depth: usize,
    stack: &mut Vec<Node>,
    top: &mut Vec<Node>,
) -> Result<(), ImportError> {
    for (i, line) in text.lines().enumerate() {
        let at = format!("{}:{}", name.display(), i + 1);
        let mut current: Option<Node> = None;
        for word in words(line, &at)? {
            match word.as_str() {
                "{" => {
                    let mut node = current
                        .take()
                        .unwrap_or_else(|| previous_statement(stack, top, &at));
                    node.children.get_or_insert_with(Vec::new);
                    stack.push(node);
                }
                "}" => {
                    if let Some(node) = current.take() {
                        push(stack, top, node);
                    }
                    let done = stack
                        .pop()
                        .ok_or_else(|| ImportError::UnbalancedClose { at: at.clone() })?;
                    push(stack, top, done);
                }
                _ => match &mut current {
                    Some(node) => node.args.push(word),
                    None => {
                        current = Some(Node {
                            key: word,
                            args: Vec::new(),
                            children: None,
                            at: at.clone(),
                        })
                    }
                },
            }
        }
        let Some(node) = current else { continue };
        if node.key == "include" {
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(ImportError::IncludeDepth { at });
            }
            let pattern = node.arg(0).unwrap_or_default();
            let pattern = name.parent().unwrap_or(Path::new("")).join(pattern);
            let files = load(&pattern)?;
            if files.is_empty() {
                push(stack, top, node);
            }
            for (file, text) in files {
                parse_into(&file, &text, load, depth + 1, stack, top)?;
            }
        } else {
            push(stack, top, node);
        }
    }
    Ok(())
}

/// Adds a finished statement to the open block, or to the top level.
fn push(stack: &mut [Node], top: &mut Vec<Node>, node: Node) {
    match stack.last_mut() {
        Some(parent) => parent.children.get_or_insert_with(Vec::new).push(node),
        None => top.push(node),
    }
}

/// The statement a `{` alone on its line opens: the previous one if it has no block yet,
/// else a nameless one.
fn previous_statement(stack: &mut [Node], top: &mut Vec<Node>, at: &str) -> Node {
    let siblings = match stack.last_mut() {
        Some(parent) => parent.children.get_or_insert_with(Vec::new),
        None => top,
    };
    match siblings.pop_if(|n| n.children.is_none()) {
        Some(node) => node,
        None => Node {
            key: String::new(),
            args: Vec::new(),
            children: None,
            at: at.to_owned(),
        },
    }
}

/// The real loader: `include` patterns with `*` and `?` in the file name (like keepalived's
/// glob), matching files read in name order.
pub fn read_files(pattern: &Path) -> Result<Vec<(PathBuf, String)>, ImportError> {
    let read = |path: &Path| {
        crate::config::read_config_text(path).map_err(|e| ImportError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    };
    let file_name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !file_name.contains(['*', '?']) {
        return match std::fs::metadata(pattern) {
            Ok(_) => Ok(vec![(pattern.to_owned(), read(pattern)?)]),
            Err(_) => Ok(Vec::new()),
        };
    }
    let dir = pattern.parent().unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| wildcard_match(&file_name, &n.to_string_lossy()))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| read(&p).map(|text| (p, text)))
        .collect()
}

/// `*` and `?` matching of one file name.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Why an option has no raftvip equivalent: the comment written beside it.
fn unmapped_reason(key: &str) -> Option<&'static str> {
    Some(match key {
        "state" => "no configured MASTER/BACKUP: the Raft leader holds the VIPs",
        "priority" => "no priorities: any healthy voter may lead; a quorum elects it",
        "virtual_router_id" => "no VRID: clusters are told apart by `cluster` + the secret, so no collisions on a shared LAN",
        "advert_int" => "no adverts: Raft heartbeats ([timing] heartbeat_ms = 25) detect a lost holder in ~0.1 s, see docs/timing.md",
        "authentication" | "auth_type" | "auth_pass" => "replaced by secret_file: every peer request is signed with HMAC-SHA256",
        "nopreempt" | "preempt_delay" | "preempt" => "raftvip never preempts: a returning box does not take the VIP back (pre-vote)",
        "garp_master_delay" | "garp_master_repeat" | "garp_lower_prio_delay" | "garp_lower_prio_repeat"
        | "garp_master_refresh_repeat" | "garp_interval" | "gna_interval" => {
            "announcements follow [announce] burst_count/burst_interval_ms (3 frames of each form, 20 ms apart)"
        }
        "track_interface" => "no interface tracking: a box whose link is down loses its quorum and the fence releases the VIP",
        "mcast_src_ip" | "unicast_ttl" | "vrrp_version" | "version" | "native_ipv6" | "dont_track_primary"
        | "use_vmac" | "vmac_xmit_base" | "unicast_fault_no_peer" | "check_unicast_src" => {
            "VRRP transport detail: raftvip talks HTTP between the [[peer]] addresses"
        }
        "smtp_alert" => "no mail: use the [notify] script or alert on /metrics",
        "virtual_routes" | "virtual_rules" => "raftvip manages addresses only; add routes from the [notify] script",
        "lvs_sync_daemon_interface" => "no LVS in raftvip (HAProxy does the balancing)",
        _ => return None,
    })
}

/// The result of a conversion: the TOML text and warnings for stderr.
#[derive(Debug)]
pub struct Converted {
    pub toml: String,
    pub warnings: Vec<String>,
}

#[derive(Default)]
struct Vip {
    address: String,
    interface: String,
    label: Option<String>,
    from: String,
}

/// Converts a parsed keepalived.conf (`source` names it in the header) into a raftvip.toml.
pub fn convert(nodes: &[Node], source: &str) -> Result<Converted, ImportError> {
    let instances: Vec<&Node> = nodes.iter().filter(|n| n.key == "vrrp_instance").collect();
    if instances.is_empty() {
        return Err(ImportError::NoInstance);
    }
    let mut found = Found::default();
    for inst in &instances {
        found.read_instance(inst);
    }
    let mut warnings = std::mem::take(&mut found.conflicts);
    if instances.len() > 1 {
        warnings.push(format!(
            "{} vrrp_instances merged into one raftvip cluster: the leader holds every VIP. \
             Instances that kept different MASTERs (active/active) become active/passive; \
             run one raftvip cluster per group of VIPs if you need that.",
            instances.len()
        ));
    }
    found.skip_top_level(nodes);
    let haproxy_check = found.haproxy_check(nodes);

    let (_, members) = found.members.take().unwrap_or_default();
    let mut all: Vec<IpAddr> = members.peers.iter().copied().collect();
    if let Some(me) = members.this_box {
        if !all.contains(&me) {
            all.push(me);
        }
    }
    all.sort();

    let mut out = String::new();
    write_header(&mut out, source, &warnings, members.this_box, &all);
    write_peers(&mut out, &all, &mut warnings);
    write_vips(&mut out, &found.vips, &mut warnings);
    write_haproxy(&mut out, haproxy_check.as_deref());
    if let Some(refresh) = &found.refresh_s {
        let _ = writeln!(
            out,
            "[announce]\nrefresh_s = {refresh}                       # garp_master_refresh\n"
        );
    }
    write_notify(&mut out, &found.notify);
    if !found.skipped.is_empty() {
        let _ = writeln!(
            out,
            "# keepalived options with no raftvip equivalent, and why:"
        );
        for line in &found.skipped {
            let _ = writeln!(out, "#   {line}");
        }
    }
    Ok(Converted {
        toml: out,
        warnings,
    })
}

/// The boxes one `vrrp_instance` names.
#[derive(Default, PartialEq)]
struct Members {
    /// `unicast_src_ip`: the box this file belongs to.
    this_box: Option<IpAddr>,
    /// `unicast_peer`: the other boxes.
    peers: BTreeSet<IpAddr>,
}

impl Members {
    fn describe(&self) -> String {
        let peers: Vec<String> = self.peers.iter().map(IpAddr::to_string).collect();
        match self.this_box {
            Some(me) => format!("unicast_src_ip {me}, unicast_peer {}", peers.join(" ")),
            None => format!("unicast_peer {}", peers.join(" ")),
        }
    }
}

/// What the `vrrp_instance`s say, merged, and every line that does not map.
#[derive(Default)]
struct Found {
    vips: Vec<Vip>,
    /// The boxes, as the first instance that names any (its name, its boxes): a raftvip box
    /// has one peer address, so instances that name other addresses cannot all be followed.
    members: Option<(String, Members)>,
    /// Instances whose boxes differ from those of the first, for the warnings.
    conflicts: Vec<String>,
    /// `track_script` names.
    tracked: Vec<String>,
    /// (keepalived key, its command line).
    notify: Vec<(String, String)>,
    refresh_s: Option<String>,
    /// Lines with no raftvip equivalent, each with its location and why.
    skipped: Vec<String>,
}

impl Found {
    fn read_instance(&mut self, inst: &Node) {
        let name = inst.arg(0).unwrap_or("?");
        let interface = inst.child("interface").and_then(|n| n.arg(0));
        let mut members = Members::default();
        for child in inst.children.iter().flatten() {
            match child.key.as_str() {
                "interface" => {}
                "virtual_ipaddress" | "virtual_ipaddress_excluded" => {
                    for entry in child.children.iter().flatten() {
                        match vip_of(entry, interface) {
                            Ok((mut vip, dropped)) => {
                                if !dropped.is_empty() {
                                    self.skipped.push(format!(
                                        "{}: {} — imported as {} on {} without `{}`: raftvip binds a VIP with the kernel's defaults",
                                        entry.at,
                                        entry.line(),
                                        vip.address,
                                        vip.interface,
                                        dropped.join(" ")
                                    ));
                                }
                                vip.from = format!("vrrp_instance {name}");
                                self.vips.push(vip);
                            }
                            Err(why) => {
                                self.skipped
                                    .push(format!("{}: {} ({why})", entry.at, entry.line()))
                            }
                        }
                    }
                }
                "unicast_src_ip" => match child.arg(0).and_then(|a| a.parse().ok()) {
                    Some(ip) => members.this_box = Some(ip),
                    None => self.skipped.push(format!(
                        "{}: {} (not an address)",
                        child.at,
                        child.line()
                    )),
                },
                "unicast_peer" => {
                    for entry in child.children.iter().flatten() {
                        match entry.key.parse() {
                            Ok(ip) => {
                                members.peers.insert(ip);
                                if !entry.args.is_empty() {
                                    self.skipped.push(format!(
                                        "{}: unicast_peer {} — `{}`: VRRP transport detail, raftvip peers talk over TCP",
                                        entry.at,
                                        entry.line(),
                                        entry.args.join(" ")
                                    ));
                                }
                            }
                            Err(_) => self.skipped.push(format!(
                                "{}: unicast_peer {} (not an address)",
                                entry.at, entry.key
                            )),
                        }
                    }
                }
                "track_script" => {
                    let names = child.children.iter().flatten().map(|n| n.key.clone());
                    self.tracked.extend(names);
                }
                key @ ("notify_master" | "notify_backup" | "notify_fault" | "notify_stop"
                | "notify") => {
                    // `notify_* COMMAND [username [groupname]]`: the user is not ours to pick.
                    let command = child.args.first().cloned().unwrap_or_default();
                    self.notify.push((key.to_owned(), command));
                    if child.args.len() > 1 {
                        self.skipped.push(format!(
                            "{}: {} — the hook runs as raftvip's user, not {}",
                            child.at,
                            child.line(),
                            child.args[1..].join(" ")
                        ));
                    }
                }
                "garp_master_refresh" => self.refresh_s = child.arg(0).map(str::to_owned),
                key => {
                    let why = unmapped_reason(key).unwrap_or("no raftvip equivalent");
                    self.skipped
                        .push(format!("{}: {} — {why}", child.at, child.line()));
                }
            }
        }
        if members == Members::default() {
            return;
        }
        match &self.members {
            None => self.members = Some((name.to_owned(), members)),
            Some((_, first)) if *first == members => {}
            Some((first_name, first)) => self.conflicts.push(format!(
                "vrrp_instance {name} names other boxes ({}) than vrrp_instance {first_name} ({}): a raftvip box has one \
                 peer address, so the [[peer]] list below comes from {first_name} alone; check it on every box",
                members.describe(),
                first.describe(),
            )),
        }
    }

    /// Top-level blocks other than instances and scripts have no raftvip equivalent.
    fn skip_top_level(&mut self, nodes: &[Node]) {
        for node in nodes {
            self.skipped.push(match node.key.as_str() {
                "vrrp_instance" | "vrrp_script" => continue,
                "vrrp_sync_group" => format!(
                    "{}: vrrp_sync_group {} — not needed: all VIPs of a raftvip cluster move together",
                    node.at,
                    node.arg(0).unwrap_or_default()
                ),
                "global_defs" => format!(
                    "{}: global_defs — router_id, notification_email, script_user and vrrp_* tuning have no raftvip equivalent",
                    node.at
                ),
                "virtual_server" | "virtual_server_group" => format!(
                    "{}: {} — LVS is not part of raftvip (HAProxy balances)",
                    node.at,
                    node.line()
                ),
                "include" => format!("{}: {} — no file matched", node.at, node.line()),
                _ => format!("{}: {} — not understood", node.at, node.line()),
            });
        }
    }

    /// The tracked `vrrp_script` that checks HAProxy, which `[haproxy]` replaces; other
    /// tracked scripts and the HAProxy script's options are skipped with the reason.
    fn haproxy_check(&mut self, nodes: &[Node]) -> Option<String> {
        let scripts: Vec<&Node> = nodes.iter().filter(|n| n.key == "vrrp_script").collect();
        let mut haproxy_check: Option<String> = None;
        for name in &self.tracked {
            let script = scripts.iter().find(|s| s.arg(0) == Some(name));
            let command = script
                .and_then(|s| s.child("script"))
                .map(|n| n.args.join(" "))
                .unwrap_or_default();
            if name.to_ascii_lowercase().contains("haproxy") || command.contains("haproxy") {
                haproxy_check.get_or_insert_with(|| format!("vrrp_script {name} (`{command}`)"));
                let options = script.iter().flat_map(|s| s.children.iter().flatten());
                for opt in options.filter(|n| n.key != "script") {
                    self.skipped.push(format!(
                        "{}: {} — HAProxy is polled every 100 ms; [haproxy] rise/fall count polls, and an unhealthy box never holds the VIP (no weights)",
                        opt.at,
                        opt.line()
                    ));
                }
            } else {
                self.skipped.push(format!(
                    "track_script {name} (`{command}`) — raftvip gates only on HAProxy; make this check an HAProxy backend health check so a failure turns the backend DOWN"
                ));
            }
        }
        haproxy_check
    }
}

/// The header, the warnings so far, and the keys of this box (`all`: every box, sorted).
fn write_header(
    w: &mut String,
    source: &str,
    warnings: &[String],
    this_box: Option<IpAddr>,
    all: &[IpAddr],
) {
    let _ = writeln!(
        w,
        "# raftvip.toml converted from {source} by `raftvip import-keepalived`."
    );
    let _ = writeln!(
        w,
        "# Review every comment, then run: raftvip check-config --config FILE"
    );
    let _ = writeln!(w, "# The file is identical on every box except node_id.");
    for warning in warnings {
        let _ = writeln!(w, "# WARNING: {warning}");
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "cluster = \"lb\"                       # any name; the same on every box"
    );
    let node_id = this_box.and_then(|me| all.iter().position(|ip| *ip == me).map(|i| (i + 1, me)));
    match node_id {
        Some((id, me)) => {
            let _ = writeln!(
                w,
                "node_id = {id}                         # this box ({me}, its unicast_src_ip)",
            );
        }
        None => {
            let _ = writeln!(w, "node_id = 0                         # FILL IN: this box's id from the [[peer]] list below");
        }
    }
    let listen = this_box.map_or_else(
        || format!("0.0.0.0:{DEFAULT_PORT}"),
        |ip| socket(ip, DEFAULT_PORT),
    );
    let _ = writeln!(w, "listen = \"{listen}\"");
    let _ = writeln!(w, "data_dir = \"/var/lib/raftvip\"");
    let _ = writeln!(w, "secret_file = \"/etc/raftvip/secret\"   # FILL IN: same file on every box, e.g. `head -c 48 /dev/urandom | base64 > /etc/raftvip/secret; chmod 600 /etc/raftvip/secret` (replaces auth_pass)");
    let _ = writeln!(w);
}

/// `[[peer]]`s numbered in address order; a pair gets a commented witness and a warning.
fn write_peers(w: &mut String, all: &[IpAddr], warnings: &mut Vec<String>) {
    let _ = writeln!(
        w,
        "# From unicast_src_ip + unicast_peer, numbered in address order (the same on every box)."
    );
    if all.is_empty() {
        let _ = writeln!(
            w,
            "# FILL IN: keepalived used multicast, so the boxes are not named in its config:"
        );
        let _ = writeln!(
            w,
            "# [[peer]]\n# id = 1\n# address = \"BOX1-IP:{DEFAULT_PORT}\""
        );
    }
    for (i, ip) in all.iter().enumerate() {
        let _ = writeln!(
            w,
            "[[peer]]\nid = {}\naddress = \"{}\"",
            i + 1,
            socket(*ip, DEFAULT_PORT)
        );
    }
    if all.len() == 2 {
        let pair = "Only two boxes: Raft needs a majority, and with two voters losing either box stops \
                    every failover. Add a third vote as a witness (any small box that can reach both; \
                    it runs raftvip with role = \"witness\", no HAProxy, no VIP): uncomment the stanza \
                    below and fill in its address. check-config rejects a two-box cluster unless you \
                    add the witness or acknowledge the risk (docs/two-box-sites.md).";
        warnings.push(pair.to_owned());
        let _ = writeln!(w, "# WARNING: {pair}");
        let _ = writeln!(w, "# [[peer]]                          # the witness");
        let _ = writeln!(w, "# id = 3");
        let _ = writeln!(w, "# address = \"WITNESS-IP:{DEFAULT_PORT}\"");
    }
    let _ = writeln!(w);
}

fn write_vips(w: &mut String, vips: &[Vip], warnings: &mut Vec<String>) {
    for vip in vips {
        let _ = writeln!(w, "[[vip]]                               # {}", vip.from);
        let _ = writeln!(w, "address = \"{}\"", vip.address);
        let _ = writeln!(w, "interface = \"{}\"", vip.interface);
        if let Some(label) = &vip.label {
            let _ = writeln!(w, "label = \"{label}\"");
        }
    }
    if vips.is_empty() {
        warnings.push("no virtual_ipaddress found: add [[vip]] entries".into());
        let _ = writeln!(w, "# FILL IN: no virtual_ipaddress found\n# [[vip]]\n# address = \"192.0.2.100/32\"\n# interface = \"eth0\"");
    }
    let _ = writeln!(w);
}

/// `[haproxy]`, saying which keepalived check it replaces (`check`) and what haproxy.cfg needs.
fn write_haproxy(w: &mut String, check: Option<&str>) {
    let _ = writeln!(w, "[haproxy]");
    match check {
        Some(check) => {
            let _ = writeln!(
                w,
                "# Replaces {check}: raftvip asks HAProxy's runtime API whether frontends are OPEN"
            );
            let _ = writeln!(
                w,
                "# and backends UP, instead of whether the process exists. haproxy.cfg needs:"
            );
        }
        None => {
            let _ = writeln!(w, "# keepalived tracked no HAProxy check; raftvip always gates the VIP on HAProxy. haproxy.cfg needs:");
        }
    }
    let _ = writeln!(
        w,
        "#   global\n#       stats socket /run/haproxy/admin.sock mode 660 level admin"
    );
    let _ = writeln!(w, "stats_socket = \"/run/haproxy/admin.sock\"");
    let _ = writeln!(
        w,
        "# backends = [\"app\"]                  # must be UP; default: every backend"
    );
    let _ = writeln!(w);
}

/// `[notify]` from keepalived's notify scripts ((key, command line) pairs): each keepalived
/// key has its raftvip twin, called with the same arguments, so the scripts run unchanged
/// (docs/operations.md, "Notify hooks").
fn write_notify(w: &mut String, notify: &[(String, String)]) {
    if notify.is_empty() {
        return;
    }
    let _ = writeln!(w, "[notify]");
    let mut mapped = BTreeSet::new();
    for (key, command) in notify {
        let hook = key.strip_prefix("notify_").unwrap_or("script");
        if mapped.insert(hook) {
            let quoted = toml::Value::String(command.clone());
            let _ = writeln!(w, "{hook} = {quoted}  # {key}");
        } else {
            let _ = writeln!(
                w,
                "# also {key} {command}: raftvip has one {hook} hook; call both from one script"
            );
        }
    }
    if mapped.contains("script") {
        let _ = writeln!(
            w,
            "# script gets INSTANCE <name> STATE PRIORITY as from keepalived; <name> is the cluster name, not the vrrp_instance's."
        );
    }
    let _ = writeln!(w);
}

fn socket(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// One `virtual_ipaddress` line: `ADDR[/PREFIX] [dev IF] [label L] [brd …] [scope …] …`,
/// and the options that are not carried over.
fn vip_of(entry: &Node, interface: Option<&str>) -> Result<(Vip, Vec<String>), String> {
    let (ip, prefix) = match entry.key.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix)),
        None => (entry.key.as_str(), None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| "not an address".to_owned())?;
    let prefix = prefix.map_or_else(
        || if ip.is_ipv4() { "32" } else { "128" }.to_owned(),
        str::to_owned,
    );
    let mut vip = Vip {
        address: format!("{ip}/{prefix}"),
        interface: interface.unwrap_or_default().to_owned(),
        ..Vip::default()
    };
    let mut dropped = Vec::new();
    let mut args = entry.args.iter();
    while let Some(word) = args.next() {
        // keepalived's options that take a value; the rest are flags (no_track, noprefixroute…).
        if !["dev", "label", "brd", "scope", "peer", "track_group"].contains(&word.as_str()) {
            dropped.push(word.clone());
            continue;
        }
        let value = args
            .next()
            .ok_or_else(|| format!("`{word}` without a value"))?;
        match word.as_str() {
            "dev" => vip.interface = value.clone(),
            "label" => vip.label = Some(value.clone()),
            _ => dropped.push(format!("{word} {value}")),
        }
    }
    if vip.interface.is_empty() {
        return Err("no interface: neither `dev` nor the instance's `interface`".into());
    }
    Ok((vip, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_includes(_: &Path) -> Result<Vec<(PathBuf, String)>, ImportError> {
        Ok(Vec::new())
    }

    fn import(text: &str) -> Converted {
        let nodes = parse(
            Path::new("/etc/keepalived/keepalived.conf"),
            text,
            &no_includes,
        )
        .unwrap();
        convert(&nodes, "keepalived.conf").unwrap()
    }

    /// The common Ubuntu/Debian HAProxy pair: unicast, killall -0, notify scripts.
    const PAIR: &str = include_str!("../integration/keepalived/pair.conf");

    /// Three boxes, two instances (one IPv6), pidof / systemctl checks, a generic notify,
    /// `{` on its own line, and a sync group.
    const THREE: &str = include_str!("../integration/keepalived/three.conf");

    #[test]
    fn tokenizer_handles_quotes_comments_and_braces() {
        assert_eq!(
            words(r#"script "pidof haproxy" # c"#, "x").unwrap(),
            ["script", "pidof haproxy"]
        );
        assert_eq!(words("a{b}", "x").unwrap(), ["a", "{", "b", "}"]);
        assert_eq!(words("! all comment", "x").unwrap(), Vec::<String>::new());
        assert_eq!(
            words("script \"oops", "f:3").unwrap_err(),
            ImportError::UnterminatedQuote { at: "f:3".into() }
        );
    }

    #[test]
    fn unbalanced_blocks_are_errors_with_a_location() {
        let err = parse(
            Path::new("k.conf"),
            "vrrp_instance A {\n interface eth0\n",
            &no_includes,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "k.conf:1: block 'vrrp_instance' is never closed (missing '}')"
        );
        let err = parse(Path::new("k.conf"), "}\n", &no_includes).unwrap_err();
        assert!(err.to_string().starts_with("k.conf:1: unbalanced"), "{err}");
    }

    #[test]
    fn pair_maps_vips_peers_haproxy_and_notify() {
        let c = import(PAIR);
        let t = &c.toml;
        assert!(t.contains("node_id = 1 "), "{t}");
        assert!(t.contains("listen = \"192.0.2.11:7480\""), "{t}");
        assert!(
            t.contains("[[peer]]\nid = 1\naddress = \"192.0.2.11:7480\""),
            "{t}"
        );
        assert!(
            t.contains("[[peer]]\nid = 2\naddress = \"192.0.2.12:7480\""),
            "{t}"
        );
        assert!(
            t.contains("address = \"192.0.2.100/24\"\ninterface = \"eth0\"\nlabel = \"eth0:vip\""),
            "{t}"
        );
        assert!(
            t.contains("Replaces vrrp_script chk_haproxy (`killall -0 haproxy`)"),
            "{t}"
        );
        assert!(
            t.contains("stats_socket = \"/run/haproxy/admin.sock\""),
            "{t}"
        );
        // Each notify key keeps its script, called as keepalived called it.
        for (hook, key, script) in [
            ("master", "notify_master", "master.sh"),
            ("backup", "notify_backup", "backup.sh"),
            ("fault", "notify_fault", "fault.sh"),
        ] {
            let line = format!("{hook} = \"/etc/keepalived/{script}\"  # {key}");
            assert!(t.contains(&line), "{line} missing\n{t}");
        }
        // Every unmapped option is named with its reason.
        for opt in [
            "state MASTER",
            "priority 101",
            "virtual_router_id 51",
            "advert_int 1",
            "nopreempt",
            "authentication",
            "interval 2",
            "weight 2",
            "global_defs",
        ] {
            assert!(
                t.contains(&format!(": {opt}")) || t.contains(opt),
                "{opt} not mentioned\n{t}"
            );
        }
        assert!(t.contains("virtual_router_id 51 — no VRID"), "{t}");
        assert!(t.contains("priority 101 — no priorities"), "{t}");
        // The auth_pass value never makes it into the output.
        assert!(!t.contains("s3cret"), "{t}");
        // A pair: warning and a commented witness.
        assert!(
            c.warnings.iter().any(|w| w.contains("witness")),
            "{:?}",
            c.warnings
        );
        assert!(
            t.contains("# [[peer]]                          # the witness\n# id = 3"),
            "{t}"
        );
    }

    #[test]
    fn three_boxes_two_instances_ipv6_and_non_haproxy_checks() {
        let c = import(THREE);
        let t = &c.toml;
        // Address order, so every box gets the same ids; this box is .2.
        assert!(t.contains("id = 1\naddress = \"198.51.100.1:7480\""), "{t}");
        assert!(t.contains("id = 3\naddress = \"198.51.100.3:7480\""), "{t}");
        assert!(t.contains("node_id = 2 "), "{t}");
        assert!(
            t.contains("address = \"198.51.100.50/32\"\ninterface = \"ens3\""),
            "{t}"
        );
        assert!(
            t.contains("address = \"198.51.100.51/32\"\ninterface = \"ens4\""),
            "{t}"
        );
        assert!(
            t.contains("address = \"2001:db8::50/64\"\ninterface = \"ens3\""),
            "{t}"
        );
        assert!(t.contains("systemctl is-active --quiet haproxy"), "{t}");
        assert!(
            t.contains(
                "track_script chk_disk (`/usr/local/bin/disk-ok`) — raftvip gates only on HAProxy"
            ),
            "{t}"
        );
        assert!(t.contains("[announce]\nrefresh_s = 30"), "{t}");
        assert!(t.contains("script = \"/etc/keepalived/notify.sh\""), "{t}");
        assert!(t.contains("native_ipv6 — VRRP transport detail"), "{t}");
        assert!(t.contains("vrrp_sync_group G1 — not needed"), "{t}");
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("2 vrrp_instances merged")),
            "{:?}",
            c.warnings
        );
        assert!(
            !c.warnings.iter().any(|w| w.contains("witness")),
            "{:?}",
            c.warnings
        );
        crate::config::Config::parse(t).unwrap();
    }

    /// Two instances over two networks: box 1 and box 2 must still get the same [[peer]] list,
    /// taken from the first instance, and hear about the other.
    #[test]
    fn instances_naming_other_boxes_do_not_mix_their_addresses() {
        let conf = |me: u8, a: u8, b: u8| {
            format!(
                "vrrp_instance A {{\n interface eth0\n unicast_src_ip 192.0.2.{me}\n \
                 unicast_peer {{\n  192.0.2.{a}\n  192.0.2.{b}\n }}\n \
                 virtual_ipaddress {{\n  192.0.2.100\n }}\n}}\n\
                 vrrp_instance B {{\n interface eth1\n unicast_src_ip 198.51.100.{me}\n \
                 unicast_peer {{\n  198.51.100.{a}\n  198.51.100.{b}\n }}\n \
                 virtual_ipaddress {{\n  198.51.100.100\n }}\n}}\n"
            )
        };
        let box1 = import(&conf(11, 12, 13));
        let box2 = import(&conf(12, 11, 13));
        let peers = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| l.starts_with("address = \"") && l.ends_with(":7480\""))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            peers(&box1.toml),
            ["192.0.2.11", "192.0.2.12", "192.0.2.13"].map(|ip| format!("address = \"{ip}:7480\""))
        );
        assert_eq!(peers(&box1.toml), peers(&box2.toml));
        assert!(box1.toml.contains("node_id = 1 "), "{}", box1.toml);
        assert!(box2.toml.contains("node_id = 2 "), "{}", box2.toml);
        assert!(
            box1.warnings
                .iter()
                .any(|w| w.contains("vrrp_instance B names other boxes")),
            "{:?}",
            box1.warnings
        );
    }

    #[test]
    fn options_that_are_not_carried_over_are_named() {
        let c = import(
            "vrrp_instance A {\n interface eth0\n unicast_src_ip 192.0.2.11\n \
             unicast_peer {\n  192.0.2.12 min_ttl 1\n  192.0.2.13\n }\n \
             virtual_ipaddress {\n  192.0.2.100/32 dev eth0 noprefixroute\n  \
             192.0.2.101 track_group G no_track\n  192.0.2.102 192.0.2.103\n }\n}\n",
        );
        let t = &c.toml;
        for dropped in [
            "without `noprefixroute`",
            "without `track_group G no_track`",
            "without `192.0.2.103`",
            "`min_ttl 1`: VRRP transport detail",
        ] {
            assert!(t.contains(dropped), "{dropped}: {t}");
        }
    }

    #[test]
    fn includes_are_followed_relative_to_the_file() {
        let load = |pattern: &Path| -> Result<Vec<(PathBuf, String)>, ImportError> {
            assert_eq!(pattern, Path::new("/etc/keepalived/conf.d/*.conf"));
            Ok(vec![
                (PathBuf::from("/etc/keepalived/conf.d/a.conf"), "vrrp_script chk_haproxy {\n script \"pidof haproxy\"\n}\n".into()),
                (PathBuf::from("/etc/keepalived/conf.d/b.conf"), "vrrp_instance X {\n interface eth1\n virtual_ipaddress {\n 203.0.113.9\n }\n track_script {\n chk_haproxy\n }\n}\n".into()),
            ])
        };
        let nodes = parse(
            Path::new("/etc/keepalived/keepalived.conf"),
            "include conf.d/*.conf\n",
            &load,
        )
        .unwrap();
        assert_eq!(nodes[1].at, "/etc/keepalived/conf.d/b.conf:1");
        let c = convert(&nodes, "k").unwrap();
        assert!(
            c.toml
                .contains("address = \"203.0.113.9/32\"\ninterface = \"eth1\""),
            "{}",
            c.toml
        );
        assert!(c.toml.contains("`pidof haproxy`"), "{}", c.toml);
        // Multicast keepalived names no boxes: the operator fills them in.
        assert!(c.toml.contains("node_id = 0 "), "{}", c.toml);
        assert!(c.toml.contains("keepalived used multicast"), "{}", c.toml);
    }

    #[test]
    fn missing_include_and_no_instance() {
        let nodes = parse(Path::new("k"), "include /nope/*.conf\n", &no_includes).unwrap();
        assert_eq!(convert(&nodes, "k").unwrap_err(), ImportError::NoInstance);
        let looped = |_: &Path| Ok(vec![(PathBuf::from("/l"), "include l\n".to_owned())]);
        assert!(matches!(
            parse(Path::new("/l"), "include l\n", &looped).unwrap_err(),
            ImportError::IncludeDepth { .. }
        ));
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.conf", "a.conf"));
        assert!(wildcard_match("vi_?.conf", "vi_1.conf"));
        assert!(!wildcard_match("*.conf", "a.conf.bak"));
        assert!(wildcard_match("*", ""));
    }

    #[test]
    fn bad_vip_line_is_reported_not_dropped_silently() {
        let c = import("vrrp_instance A {\n virtual_ipaddress {\n 192.0.2.5\n bogus\n }\n}\n");
        assert!(c.toml.contains("192.0.2.5 (no interface"), "{}", c.toml);
        assert!(c.toml.contains("bogus (not an address)"), "{}", c.toml);
    }
}
