//! What `scripts/package.sh` builds into `dist/`: the portable binary, the `.deb` and the
//! `.rpm` (files, paths, modes, the conffile, maintainer scripts), and each package installed,
//! upgraded and removed in a throwaway root. `.ci/run` builds `dist/` first; elsewhere these
//! tests skip, saying so, until `scripts/package.sh` has run.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::apps::{have, repo, run_to_end, scratch};

const GLIBC: (u32, u32) = (2, 28);
const MAX_BYTES: u64 = 20 * 1024 * 1024;

fn dist() -> PathBuf {
    repo().join("dist")
}

fn version() -> String {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("package version")
        .to_owned()
}

fn deb() -> PathBuf {
    dist().join(format!("stickless_{}_amd64.deb", version()))
}

fn rpm() -> PathBuf {
    dist().join(format!("stickless-{}-1.x86_64.rpm", version()))
}

/// The packages are there, and so are the tools that read them.
fn built(tools: &[&str]) -> bool {
    let present = dist().join("stickless").exists() && deb().exists() && rpm().exists();
    if !have("dist/ (run scripts/package.sh)", present) {
        return false;
    }
    tools.iter().all(|tool| {
        have(
            &format!("{tool} (apt: dpkg-dev, rpm, binutils)"),
            support::apps::runs("sh", &["-c", &format!("command -v {tool}")]),
        )
    })
}

fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn binary_is_small_and_needs_nothing_but_glibc_2_28() {
    if !built(&["objdump", "ldd"]) {
        return;
    }
    let bin = dist().join("stickless");
    let size = std::fs::metadata(&bin).expect("binary").len();
    assert!(size < MAX_BYTES, "dist/stickless is {size} bytes");

    let symbols = output("objdump", &["-T", path_str(&bin)]);
    let newest = symbols
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .max()
        .expect("glibc symbol versions");
    assert!(newest <= GLIBC, "needs glibc {newest:?}");

    // Every library it loads is glibc's.
    let ldd = output("ldd", &[path_str(&bin)]);
    for line in ldd.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let lib = line.split_whitespace().next().unwrap_or_default();
        let name = lib.rsplit('/').next().unwrap_or(lib);
        assert!(
            [
                "linux-vdso.so.1",
                "libc.so.6",
                "libm.so.6",
                "libpthread.so.0",
                "libdl.so.2",
                "librt.so.1",
                "ld-linux-x86-64.so.2",
            ]
            .contains(&name),
            "dist/stickless loads {line}"
        );
    }

    // It runs, and checks the example configuration the packages install.
    let check = output(
        path_str(&bin),
        &["check", "--config", path_str(&repo().join("proxy.yaml"))],
    );
    assert!(check.contains("routes"), "{check}");
}

#[test]
fn deb_carries_binary_unit_conffile_and_scripts() {
    if !built(&["dpkg-deb"]) {
        return;
    }
    let deb = deb();
    let fields = output("dpkg-deb", &["-f", path_str(&deb)]);
    for expected in [
        "Package: stickless",
        &format!("Version: {}", version()),
        "Architecture: amd64",
    ] {
        assert!(fields.contains(expected), "{expected} in\n{fields}");
    }

    // Paths, modes and owners as dpkg installs them.
    let listing = output("dpkg-deb", &["-c", path_str(&deb)]);
    let entry = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" ./{path}")))
            .unwrap_or_else(|| panic!("no {path} in\n{listing}"))
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(entry("usr/bin/stickless"), "-rwxr-xr-x root/root");
    assert_eq!(
        entry("usr/lib/systemd/system/stickless.service"),
        "-rw-r--r-- root/root"
    );
    // root:root in the archive; postinst gives the group to stickless on first install.
    assert_eq!(entry("etc/stickless/proxy.yaml"), "-rw-r----- root/root");

    let control = scratch("deb-control");
    output(
        "dpkg-deb",
        &["--control", path_str(&deb), path_str(&control)],
    );
    let conffiles = std::fs::read_to_string(control.join("conffiles")).expect("conffiles");
    assert_eq!(conffiles.trim(), "/etc/stickless/proxy.yaml");
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.join(script);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("no {script}"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("meta").permissions(),
        );
        assert_eq!(mode & 0o777, 0o755, "{script} mode");
        assert_never_starts(script, &text);
    }
    let postinst = std::fs::read_to_string(control.join("postinst")).expect("postinst");
    assert!(postinst.contains("useradd --system"), "{postinst}");
    assert!(postinst.contains("systemctl daemon-reload"), "{postinst}");

    let data = scratch("deb-data");
    output("dpkg-deb", &["-x", path_str(&deb), path_str(&data)]);
    let unit = std::fs::read_to_string(data.join("usr/lib/systemd/system/stickless.service"))
        .expect("unit");
    assert!(
        unit.contains("\nExecStart=/usr/bin/stickless run --config /etc/stickless/proxy.yaml\n")
    );
    assert!(!unit.contains("/usr/local/bin"), "{unit}");
    let shipped = std::fs::read(data.join("etc/stickless/proxy.yaml")).expect("config");
    let example = std::fs::read(repo().join("proxy.yaml")).expect("proxy.yaml");
    assert_eq!(
        shipped, example,
        "the example configuration, as in the repository"
    );
}

/// Installing never starts or enables the service: that is the administrator's call.
fn assert_never_starts(script: &str, text: &str) {
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(at) = words.iter().position(|w| *w == "systemctl") {
            let verb = words[at + 1..]
                .iter()
                .find(|w| !w.starts_with('-'))
                .copied()
                .unwrap_or_default();
            assert!(
                ["daemon-reload", "try-restart", "disable"].contains(&verb),
                "{script} runs `systemctl {verb}`: {line}"
            );
        }
    }
}

#[test]
fn rpm_carries_binary_unit_noreplace_config_and_scripts() {
    if !built(&["rpm"]) {
        return;
    }
    let rpm = rpm();
    let rpm = path_str(&rpm);
    let name = output("rpm", &["-qp", "--qf", "%{NAME} %{VERSION} %{ARCH}", rpm]);
    assert_eq!(name, format!("stickless {} x86_64", version()));

    let files = output(
        "rpm",
        &[
            "-qp",
            "--qf",
            "[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]",
            rpm,
        ],
    );
    let entry = |path: &str| {
        files
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")))
            .unwrap_or_else(|| panic!("no {path} in\n{files}"))
            .to_owned()
    };
    assert!(entry("/usr/bin/stickless").starts_with("-rwxr-xr-x root:root "));
    assert!(entry("/usr/lib/systemd/system/stickless.service").starts_with("-rw-r--r-- root:root "));
    // %config(noreplace): flags "cn"; the group is the service's, created in %pre.
    assert!(
        entry("/etc/stickless/proxy.yaml").starts_with("-rw-r----- root:stickless cn "),
        "{files}"
    );
    assert_eq!(
        output("rpm", &["-qpc", rpm]).trim(),
        "/etc/stickless/proxy.yaml"
    );

    let scripts = output("rpm", &["-qp", "--scripts", rpm]);
    assert!(scripts.contains("useradd --system"), "{scripts}");
    assert!(scripts.contains("systemctl daemon-reload"), "{scripts}");
    assert_never_starts("rpm scriptlets", &scripts);
}

/// An upgrade's package: the same files under a higher version, made without a second build.
fn upgrade_packages() -> PathBuf {
    let out = scratch("upgrade");
    run_to_end(
        Command::new("bash")
            .arg(repo().join("scripts/package.sh"))
            .args([
                "--no-build",
                "--version",
                &format!("{}.1", version()),
                "--out",
            ])
            .arg(&out)
            .current_dir(repo()),
        Duration::from_secs(120),
    );
    out
}

/// Root, and a kernel that lets it overlay `/` in a private mount namespace.
fn can_make_throwaway_root() -> bool {
    let root = support::apps::runs("sh", &["-c", "[ \"$(id -u)\" -eq 0 ]"]);
    have(
        "root and unshare (to install packages into a throwaway root)",
        root && support::apps::runs("unshare", &["--mount", "true"]),
    )
}

fn install_upgrade_remove(kind: &str, v1: &Path, v2: &Path) -> String {
    run_to_end(
        Command::new(repo().join("tests/support/packages/throwaway_root.sh"))
            .arg(kind)
            .arg(v1)
            .arg(v2),
        Duration::from_secs(120),
    )
}

#[test]
fn deb_installs_upgrades_keeping_config_and_removes_in_a_throwaway_root() {
    if !built(&["dpkg", "dpkg-deb"]) || !can_make_throwaway_root() {
        return;
    }
    let upgrade = upgrade_packages();
    let v2 = upgrade.join(format!("stickless_{}.1_amd64.deb", version()));
    let log = install_upgrade_remove("deb", &deb(), &v2);
    for step in [
        "ok: installed",
        "ok: upgrade kept the edited config",
        "ok: remove: binary and unit gone, config kept",
        "ok: purge: config gone",
    ] {
        assert!(log.contains(step), "{step} in\n{log}");
    }
    assert!(
        !Path::new("/usr/bin/stickless").exists(),
        "the host was touched"
    );
}

#[test]
fn rpm_installs_upgrades_keeping_config_and_erases_in_a_throwaway_root() {
    if !built(&["rpm", "rpmbuild"]) || !can_make_throwaway_root() {
        return;
    }
    let upgrade = upgrade_packages();
    let v2 = upgrade.join(format!("stickless-{}.1-1.x86_64.rpm", version()));
    let log = install_upgrade_remove("rpm", &rpm(), &v2);
    for step in [
        "ok: installed",
        "ok: upgrade kept the edited config",
        "ok: erase: binary and unit gone, edited config kept",
    ] {
        assert!(log.contains(step), "{step} in\n{log}");
    }
    assert!(
        !Path::new("/usr/bin/stickless").exists(),
        "the host was touched"
    );
}
