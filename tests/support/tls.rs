//! TLS for the tests that check kmsenv's HTTPS client: a throwaway CA and a
//! server certificate it signed, made with the `openssl` CLI (the fault proxy
//! serves TLS with them).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A throwaway CA and a server certificate it signed (for `localhost`, or the
/// name given to [`make_ca`], and `127.0.0.1`), made with the `openssl` CLI.
pub struct TestCa {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Makes a [`TestCa`] in `dir`; `None` (with a note on stderr) when the `openssl`
/// CLI is not installed.
pub fn make_test_ca(dir: &Path) -> Option<TestCa> {
    make_ca(dir, &[("CN", "kmsenv test CA")], "localhost")
}

/// Makes a [`TestCa`] in `dir` whose CA has the subject `ca_subject` (attributes
/// in order, each value a PrintableString where it can be, as public roots encode
/// them: a stand-in's subject can have a real root's DER bytes) and whose server
/// certificate is for `server_name` and 127.0.0.1.
pub fn make_ca(dir: &Path, ca_subject: &[(&str, &str)], server_name: &str) -> Option<TestCa> {
    if Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("note: the openssl CLI is not installed; TLS test skipped");
        return None;
    }
    let ca = TestCa {
        ca_cert: dir.join("test-ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    };
    let ca_key = dir.join("test-ca.key");
    let csr = dir.join("server.csr");
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        format!(
            "basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature, keyEncipherment\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = DNS:{server_name}, IP:127.0.0.1\n"
        ),
    )
    .expect("write server.ext");
    let ca_config = dir.join("ca.cnf");
    let mut config = "[req]\nprompt = no\nstring_mask = pkix\ndistinguished_name = dn\n[dn]\n".to_string();
    for (attribute, value) in ca_subject {
        config.push_str(&format!("{attribute} = {value}\n"));
    }
    std::fs::write(&ca_config, config).expect("write ca.cnf");
    let server_subject = format!("/CN={server_name}");
    let openssl = |args: &[&OsStr]| {
        let out = Command::new("openssl")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let s = |text: &'static str| OsStr::new(text);
    openssl(&[
        s("req"),
        s("-x509"),
        s("-newkey"),
        s("ec"),
        s("-pkeyopt"),
        s("ec_paramgen_curve:prime256v1"),
        s("-nodes"),
        s("-days"),
        s("2"),
        s("-config"),
        ca_config.as_os_str(),
        s("-addext"),
        s("basicConstraints=critical,CA:TRUE"),
        s("-addext"),
        s("keyUsage=critical,keyCertSign,cRLSign"),
        s("-keyout"),
        ca_key.as_os_str(),
        s("-out"),
        ca.ca_cert.as_os_str(),
    ]);
    openssl(&[
        s("req"),
        s("-new"),
        s("-newkey"),
        s("ec"),
        s("-pkeyopt"),
        s("ec_paramgen_curve:prime256v1"),
        s("-nodes"),
        s("-subj"),
        OsStr::new(&server_subject),
        s("-keyout"),
        ca.server_key.as_os_str(),
        s("-out"),
        csr.as_os_str(),
    ]);
    openssl(&[
        s("x509"),
        s("-req"),
        s("-in"),
        csr.as_os_str(),
        s("-CA"),
        ca.ca_cert.as_os_str(),
        s("-CAkey"),
        ca_key.as_os_str(),
        s("-set_serial"),
        s("2"),
        s("-days"),
        s("2"),
        s("-extfile"),
        ext.as_os_str(),
        s("-out"),
        ca.server_cert.as_os_str(),
    ]);
    Some(ca)
}

/// A copy of this machine's /etc/ssl in `dir`, with the CA at `ca` added to its
/// bundle (`in_bundle`) and to its certificate folder (`in_folder`, as a file and
/// its OpenSSL hash link, the way `update-ca-certificates` adds one). For
/// [`crate::support::Kmsenv::with_etc_ssl`].
pub fn system_store(dir: &Path, ca: &Path, in_bundle: bool, in_folder: bool) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the folder");
    let store = dir.join("etc-ssl");
    let status = Command::new("cp")
        .arg("-a")
        .arg("/etc/ssl")
        .arg(&store)
        .status()
        .expect("run cp");
    assert!(status.success(), "copy /etc/ssl");
    let pem = std::fs::read(ca).expect("read the CA");
    if in_bundle {
        let bundle = store.join("certs/ca-certificates.crt");
        let mut text = std::fs::read(&bundle).expect("read the bundle");
        text.extend_from_slice(&pem);
        std::fs::write(&bundle, text).expect("write the bundle");
    }
    if in_folder {
        std::fs::write(store.join("certs/kmsenv-test-ca.pem"), &pem).expect("write the CA");
        let out = Command::new("openssl")
            .args(["x509", "-hash", "-noout", "-in"])
            .arg(ca)
            .output()
            .expect("run openssl");
        let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // The first free suffix, as c_rehash numbers roots of the same subject.
        let link = (0..)
            .map(|n| store.join(format!("certs/{hash}.{n}")))
            .find(|p| p.symlink_metadata().is_err())
            .expect("a free hash link name");
        std::os::unix::fs::symlink("kmsenv-test-ca.pem", link).expect("hash link");
    }
    store
}

/// A copy of this machine's /etc/hosts in `dir` that also maps `name` to
/// 127.0.0.1, for [`crate::support::Kmsenv::with_etc`].
pub fn hosts_with(dir: &Path, name: &str) -> PathBuf {
    let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    text.push_str(&format!("\n127.0.0.1 {name}\n"));
    let path = dir.join("hosts");
    std::fs::write(&path, text).expect("write hosts");
    path
}
