//! Topology B, what a user would build by hand: nginx as the consumer-side proxy (plain HTTP in,
//! HTTPS with a client certificate out, keep-alive upstream) and nginx as the provider-side
//! proxy (TLS 1.3 requiring a client certificate of the same CA, keep-alive to the backend).
//! Ed25519 keys like the nodes'; one process each (`master_process off`), access logs off.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::procs::{Proc, free_port, wait_listening};

/// The two running proxies.
#[derive(Debug)]
pub(crate) struct NginxChain {
    pub consumer: Proc,
    pub provider: Proc,
    /// Where clients send requests (the consumer proxy).
    pub url: String,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl").args(args).current_dir(dir).output().context("run openssl")?;
    if !out.status.success() {
        bail!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A CA and two leaf certificates (`provider.bench` as server, `consumer.bench` as client).
fn make_pki(dir: &Path) -> Result<()> {
    openssl(dir, &["genpkey", "-algorithm", "ed25519", "-out", "ca.key"])?;
    openssl(
        dir,
        &["req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=bench-ca", "-days", "2", "-out", "ca.crt"],
    )?;
    for (name, usage) in [("provider", "serverAuth"), ("consumer", "clientAuth")] {
        openssl(dir, &["genpkey", "-algorithm", "ed25519", "-out", &format!("{name}.key")])?;
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                &format!("{name}.key"),
                "-subj",
                &format!("/CN={name}.bench"),
                "-out",
                &format!("{name}.csr"),
            ],
        )?;
        let ext = dir.join(format!("{name}.ext"));
        std::fs::write(&ext, format!("subjectAltName=DNS:{name}.bench\nextendedKeyUsage={usage}\n"))?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ],
        )?;
    }
    Ok(())
}

/// The parts every nginx.conf of the chain shares: one process, no access log, temp files in
/// `dir`, no body size limit, keep-alive without a request cap.
fn common(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/{name}.pid;\nerror_log {d}/{name}-error.log warn;\n\
         events {{ worker_connections 4096; }}\n"
    ) + &format!(
        "http {{\n  access_log off;\n  client_body_temp_path {d}/{name}-body;\n  proxy_temp_path {d}/{name}-proxy;\n  \
         fastcgi_temp_path {d}/{name}-fcgi;\n  uwsgi_temp_path {d}/{name}-uwsgi;\n  scgi_temp_path {d}/{name}-scgi;\n  \
         client_max_body_size 0;\n  keepalive_requests 10000000;\n  keepalive_timeout 300s;\n"
    )
}

fn consumer_conf(dir: &Path, listen: u16, provider: u16) -> String {
    let d = dir.display();
    common(dir, "consumer")
        + &format!(
            "  upstream provider {{ server 127.0.0.1:{provider}; keepalive 128; keepalive_requests 10000000; }}\n  \
             server {{\n    listen 127.0.0.1:{listen};\n    location / {{\n      proxy_pass https://provider;\n      \
             proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      \
             proxy_ssl_certificate {d}/consumer.crt;\n      proxy_ssl_certificate_key {d}/consumer.key;\n      \
             proxy_ssl_trusted_certificate {d}/ca.crt;\n      proxy_ssl_verify on;\n      proxy_ssl_name provider.bench;\n      \
             proxy_ssl_protocols TLSv1.3;\n      proxy_ssl_session_reuse on;\n    }}\n  }}\n}}\n"
        )
}

fn provider_conf(dir: &Path, listen: u16, backend: SocketAddr) -> String {
    let d = dir.display();
    common(dir, "provider")
        + &format!(
            "  upstream backend {{ server {backend}; keepalive 128; keepalive_requests 10000000; }}\n  \
             server {{\n    listen 127.0.0.1:{listen} ssl;\n    ssl_certificate {d}/provider.crt;\n    \
             ssl_certificate_key {d}/provider.key;\n    ssl_client_certificate {d}/ca.crt;\n    ssl_verify_client on;\n    \
             ssl_protocols TLSv1.3;\n    location / {{\n      proxy_pass http://backend;\n      proxy_http_version 1.1;\n      \
             proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
        )
}

/// Writes the PKI and both configurations under `dir` and starts both proxies on `cpu`.
pub(crate) fn start(dir: &Path, backend: SocketAddr, cpu: Option<u32>) -> Result<NginxChain> {
    std::fs::create_dir_all(dir)?;
    make_pki(dir)?;
    let (consumer_port, provider_port) = (free_port()?, free_port()?);
    let write = |name: &str, text: String| -> Result<PathBuf> {
        let p = dir.join(format!("{name}.conf"));
        std::fs::write(&p, text)?;
        Ok(p)
    };
    let pconf = write("provider", provider_conf(dir, provider_port, backend))?;
    let cconf = write("consumer", consumer_conf(dir, consumer_port, provider_port))?;
    let nginx = which_nginx()?;
    let start_one = |name: &str, conf: &Path, port: u16| -> Result<Proc> {
        let conf_s = conf.display().to_string();
        let prefix = dir.display().to_string();
        let errlog = dir.join(format!("{name}-error.log")).display().to_string();
        let mut p = Proc::start(
            &format!("nginx {name}"),
            &nginx,
            &["-c", &conf_s, "-p", &prefix, "-e", &errlog],
            cpu,
            &dir.join(format!("{name}.out")),
        )?;
        wait_listening(&mut p, SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(10))?;
        Ok(p)
    };
    let provider = start_one("provider", &pconf, provider_port)?;
    let consumer = start_one("consumer", &cconf, consumer_port)?;
    Ok(NginxChain { consumer, provider, url: format!("http://127.0.0.1:{consumer_port}") })
}

/// nginx is in /usr/sbin on Debian, which is not always on a user's PATH.
pub(crate) fn which_nginx() -> Result<PathBuf> {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("nginx is not installed (bench/run installs it from Debian's packages)")
}
