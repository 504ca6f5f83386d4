//! Property tests of the stats parsers: arbitrary bytes never make them panic, and whatever
//! HAProxy can write — any text in any field, quoted as HAProxy quotes CSV — reads back as
//! written and frames correctly in prompt mode. Free text (check and agent messages) never
//! changes a verdict.

use proptest::prelude::*;

use super::tests::{config, prompt_form};
use super::*;

/// A field as HAProxy writes it (`csv_enc(str, 1, ...)` in its tools.c): quoted only when
/// the text holds CR, LF, a comma or a quote; quotes inside doubled.
fn haproxy_csv(field: &str) -> String {
    if field.contains(['\r', '\n', ',', '"']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// Any text HAProxy can hold (a C string: no NUL), often made of the characters that matter
/// to CSV and to prompt-mode framing.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex("[^\\x00]{0,16}").expect("regex"),
        proptest::string::string_regex("[a,\"\\r\\n> #]{0,12}").expect("regex"),
    ]
}

/// A row as generated: the fields the parser reads, and two free-text ones it skips.
#[derive(Debug, Clone)]
struct Row {
    read: StatRow,
    last_chk: String,
    last_agt: String,
}

fn kind() -> impl Strategy<Value = RowKind> {
    prop_oneof![
        Just(RowKind::Frontend),
        Just(RowKind::Backend),
        Just(RowKind::Server),
        Just(RowKind::Listener),
    ]
}

/// A proxy name: HAProxy allows only letters, digits and `-_.:` in it. (So no row starts
/// with `> `, which prompt-mode framing relies on.)
fn proxy_name() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[A-Za-z0-9_.:-]{1,12}").expect("regex")
}

fn row() -> impl Strategy<Value = Row> {
    (proxy_name(), text(), kind(), text(), text(), text(), text()).prop_map(
        |(pxname, svname, kind, status, check_status, last_chk, last_agt)| Row {
            read: StatRow {
                pxname,
                svname,
                kind,
                status,
                check_status,
            },
            last_chk,
            last_agt,
        },
    )
}

/// A whole `show info;show stat` answer in HAProxy's one-shot form. Like HAProxy, the
/// header and every row end with a comma.
fn answer(info: Info, rows: &[Row]) -> String {
    let mut text = format!(
        "Name: HAProxy\nPid: {}\nUptime_sec: {}\nStopping: {}\n\n",
        info.pid,
        info.uptime_sec,
        u8::from(info.stopping)
    );
    text.push_str("# pxname,svname,status,type,check_status,last_chk,last_agt,\n");
    for row in rows {
        let r = &row.read;
        let kind = match r.kind {
            RowKind::Frontend => "0",
            RowKind::Backend => "1",
            RowKind::Server => "2",
            RowKind::Listener => "3",
        };
        let fields = [
            &r.pxname,
            &r.svname,
            &r.status,
            kind,
            &r.check_status,
            &row.last_chk,
            &row.last_agt,
        ];
        for field in fields {
            text.push_str(&haproxy_csv(field));
            text.push(',');
        }
        text.push('\n');
    }
    text.push('\n');
    text
}

fn info() -> impl Strategy<Value = Info> {
    (any::<u32>(), any::<u64>(), any::<bool>()).prop_map(|(pid, uptime_sec, stopping)| Info {
        pid,
        uptime_sec,
        stopping,
    })
}

/// The same HAProxy state with no free text: the verdict must not tell them apart.
fn without_free_text(rows: &[Row]) -> Vec<Row> {
    let mut rows = rows.to_vec();
    for row in &mut rows {
        row.last_chk.clear();
        row.last_agt.clear();
    }
    rows
}

/// Rows of the shape HAProxy writes, with arbitrary free text: names from a small set (so
/// that backends gather servers and watched names match), HAProxy's own states.
fn realistic_row() -> impl Strategy<Value = Row> {
    let name = prop_oneof![Just("fe"), Just("be"), Just("other")];
    let status = prop_oneof![
        Just("UP"),
        Just("DOWN"),
        Just("OPEN"),
        Just("UP 1/2"),
        Just("no check"),
        Just("MAINT")
    ];
    let check = prop_oneof![Just("L7OK"), Just("L4CON"), Just("INI"), Just("")];
    (name, 0..3u8, status, check, text(), text()).prop_map(
        |(px, which, status, check, last_chk, last_agt)| {
            let (svname, kind) = match which {
                0 => ("FRONTEND", RowKind::Frontend),
                1 => ("BACKEND", RowKind::Backend),
                _ => ("s", RowKind::Server),
            };
            Row {
                read: StatRow {
                    pxname: px.into(),
                    svname: svname.into(),
                    kind,
                    status: status.into(),
                    check_status: check.into(),
                },
                last_chk,
                last_agt,
            }
        },
    )
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_answer(&bytes);
        let _ = parse_info(&bytes);
        let _ = parse_stat(&bytes);
        for skip in 0..3 {
            if let Some(frame) = framed(&bytes, skip) {
                let _ = parse_answer(&one_shot(&bytes, frame));
            }
        }
    }

    #[test]
    fn bytes_spliced_into_a_real_answer_never_panic(
        at in 0..4000usize,
        cut in 0..64usize,
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut text = include_bytes!("../fixtures/quoted_checks.txt").to_vec();
        let at = at.min(text.len());
        let end = (at + cut).min(text.len());
        text.splice(at..end, bytes);
        if let Ok(snapshot) = parse_answer(&text) {
            let _ = judge(&snapshot, &config(Path::new("/x"), &[], &["be_web"], 1));
        }
    }

    #[test]
    fn what_haproxy_writes_reads_back(info in info(), rows in proptest::collection::vec(row(), 0..8)) {
        let text = answer(info, &rows);
        let snapshot = parse_answer(text.as_bytes()).expect("parses");
        prop_assert_eq!(snapshot.info, info);
        prop_assert!(snapshot.odd.is_empty(), "{:?}", snapshot.odd);
        let want: Vec<StatRow> = rows.iter().map(|r| r.read.clone()).collect();
        prop_assert_eq!(snapshot.rows, want);
    }

    #[test]
    fn prompt_mode_frames_what_haproxy_writes(info in info(), rows in proptest::collection::vec(row(), 0..6)) {
        let text = answer(info, &rows);
        let mut session = b"\n> \n> ".to_vec();
        session.extend_from_slice(&prompt_form(text.as_bytes()));
        let frame = framed(&session, SESSION_OPEN_PROMPTS);
        prop_assert!(frame.is_some());
        prop_assert_eq!(one_shot(&session, frame.unwrap()), text.as_bytes());
        // No earlier point where a read could end is taken for the end.
        for end in 0..session.len() {
            prop_assert_eq!(framed(&session[..end], SESSION_OPEN_PROMPTS), None, "ends early at {}", end);
        }
    }

    #[test]
    fn free_text_never_changes_the_verdict(
        info in info(),
        rows in proptest::collection::vec(realistic_row(), 0..10),
        frontends in proptest::sample::subsequence(vec!["fe", "other"], 0..=2),
        backends in proptest::sample::subsequence(vec!["be", "other"], 0..=2),
    ) {
        let cfg = config(Path::new("/x"), &frontends, &backends, 1);
        let judged = |rows: &[Row]| {
            let snapshot = parse_answer(answer(info, rows).as_bytes()).expect("parses");
            format!("{:?}", judge(&snapshot, &cfg))
        };
        prop_assert_eq!(judged(&rows), judged(&without_free_text(&rows)));
    }

    #[test]
    fn show_info_reads_back_among_any_other_lines(
        info in info(),
        extra in proptest::collection::vec(
            ("[A-Za-z_ -]{1,12}", "[^\\x00\\n]{0,20}"),
            0..6,
        ),
    ) {
        let mut text = format!("Name: HAProxy\nPid: {}\n", info.pid);
        for (key, value) in &extra {
            if !["Pid", "Uptime_sec", "Stopping"].contains(&key.as_str()) {
                text.push_str(&format!("{key}:{value}\n"));
            }
        }
        text.push_str(&format!("Uptime_sec: {}\nStopping: {}\n", info.uptime_sec, u8::from(info.stopping)));
        prop_assert_eq!(parse_info(text.as_bytes()), Ok(info));
    }
}
