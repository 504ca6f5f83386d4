//! `raftvip import-keepalived` end to end: the real binary converts the keepalived.conf
//! fixtures, the operator fills in the placeholders (secret file, data dir, and for a pair the
//! witness), and `raftvip check-config` accepts the result.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const RAFTVIP: &str = env!("CARGO_BIN_EXE_raftvip");

/// Converts `fixture`, applies the operator's `edits` (from, to), writes the secret and runs
/// check-config; returns check-config's output.
fn convert_fill_and_check(fixture: &str, edits: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("integration/keepalived")
        .join(fixture);
    let out = Command::new(RAFTVIP)
        .arg("import-keepalived")
        .arg(&fixture)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut toml = String::from_utf8(out.stdout).unwrap();

    let secret = dir.path().join("secret");
    std::fs::write(&secret, "k".repeat(48)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let data = dir.path().join("data");
    let secret_line = format!("secret_file = \"{}\"", secret.display());
    let data_line = format!("data_dir = \"{}\"", data.display());
    let mut all = vec![
        (
            "secret_file = \"/etc/raftvip/secret\"",
            secret_line.as_str(),
        ),
        ("data_dir = \"/var/lib/raftvip\"", data_line.as_str()),
    ];
    all.extend_from_slice(edits);
    for (from, to) in all {
        assert!(
            toml.contains(from),
            "placeholder {from:?} not in output:\n{toml}"
        );
        toml = toml.replacen(from, to, 1);
    }
    let config = dir.path().join("raftvip.toml");
    std::fs::write(&config, &toml).unwrap();
    let check = Command::new(RAFTVIP)
        .arg("check-config")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        check.status.success(),
        "check-config rejects the converted config:\n{text}\n{toml}"
    );
    text
}

#[test]
fn three_box_conversion_passes_check_config() {
    let out = convert_fill_and_check("three.conf", &[]);
    assert!(
        out.contains("ok (node 2 of lb, 3 peer(s), 3 VIP(s))"),
        "{out}"
    );
}

#[test]
fn pair_conversion_with_its_witness_filled_in_passes_check_config() {
    let witness = "[[peer]]\nid = 3\naddress = \"192.0.2.13:7480\"";
    let out = convert_fill_and_check(
        "pair.conf",
        &[(
            "# [[peer]]                          # the witness\n# id = 3\n# address = \"WITNESS-IP:7480\"",
            witness,
        )],
    );
    assert!(
        out.contains("ok (node 1 of lb, 3 peer(s), 1 VIP(s))"),
        "{out}"
    );
}

#[test]
fn a_file_that_is_not_keepalived_fails_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("keepalived.conf");
    std::fs::write(&bad, "vrrp_instance A {\n interface eth0\n").unwrap();
    let out = Command::new(RAFTVIP)
        .arg("import-keepalived")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("keepalived.conf:1: block 'vrrp_instance' is never closed"),
        "{err}"
    );
}

/// A device or a FIFO named as the file, or included by it, is refused at once: read as a file,
/// `/dev/zero` filled memory and a FIFO blocked until a writer came.
#[test]
fn a_file_that_is_not_a_regular_file_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let including = dir.path().join("keepalived.conf");
    std::fs::write(&including, "include /dev/zero\n").unwrap();
    let fifo = dir.path().join("fifo.conf");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    for (file, named) in [
        (Path::new("/dev/zero"), "/dev/zero"),
        (including.as_path(), "/dev/zero"),
        (fifo.as_path(), "fifo.conf"),
    ] {
        let out = Command::new(RAFTVIP)
            .arg("import-keepalived")
            .arg(file)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(named) && err.contains("not a regular file"),
            "{}: {err}",
            file.display()
        );
    }
}
