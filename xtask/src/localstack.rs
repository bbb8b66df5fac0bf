//! LocalStack on port 4566: through `docker compose` where a Docker engine
//! answers, otherwise a pinned PyPI release in `.localstack/venv` run on the
//! host. The pid file (host) or the compose marker (Docker) records what we
//! started, so `down` stops exactly that and nothing else.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::Result;
use crate::project::{project_root, run};

const ADDRESS: &str = "127.0.0.1:4566";
const VERSION: &str = "4.13.1";
/// Each pin prevents a start-up crash of the host install: 4.14+ needs
/// Python 3.12, newer cbor2/pyopenssl/cryptography break 4.13's imports.
const CONSTRAINTS: &str = "\
localstack-core==4.13.1
cbor2<6
pyopenssl==25.3.0
cryptography<47
";
const START_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Started {
    Now,
    Already,
}

fn state_dir() -> PathBuf {
    project_root().join(".localstack")
}
fn pid_file() -> PathBuf {
    state_dir().join("localstack.pid")
}
fn compose_marker() -> PathBuf {
    state_dir().join("started-with-compose")
}
fn log_file() -> PathBuf {
    state_dir().join("localstack.log")
}
fn venv() -> PathBuf {
    state_dir().join("venv")
}

pub(crate) fn up() -> Result<Started> {
    if sqs_is_healthy() {
        println!(
            "LocalStack is already running on {ADDRESS} ({})",
            who_runs_it()
        );
        return Ok(Started::Already);
    }
    if let Some(pid) = our_host_pid() {
        println!("LocalStack (pid {pid}) is starting; waiting for SQS");
        wait_until_healthy(Some(pid))?;
        return Ok(Started::Already);
    }
    if port_is_taken() {
        return Err(format!(
            "port {ADDRESS} is taken by a program that is not LocalStack's SQS; stop it and retry"
        ));
    }
    fs::create_dir_all(state_dir()).map_err(|e| format!("cannot create .localstack/: {e}"))?;
    let docker = use_docker();
    if !docker {
        install_on_host()?;
    }
    let started_at = Instant::now();
    if docker {
        println!("starting LocalStack {VERSION} with docker compose");
        run(Command::new("docker")
            .args(["compose", "up", "--detach", "--wait"])
            .current_dir(project_root()))?;
        fs::write(compose_marker(), "").map_err(|e| e.to_string())?;
        wait_until_healthy(None)?;
    } else {
        let pid = start_on_host()?;
        wait_until_healthy(Some(pid))?;
    }
    println!(
        "LocalStack is ready on http://localhost:4566 after {:.1} s (logs: cargo xtask localstack-logs)",
        started_at.elapsed().as_secs_f64()
    );
    Ok(Started::Now)
}

pub(crate) fn down() -> Result<()> {
    if let Some(pid) = our_host_pid() {
        // The process leads its own group: signal the group to stop its children too.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pid}")])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while is_alive(pid) && Instant::now() < deadline {
            sleep(Duration::from_millis(100));
        }
        if is_alive(pid) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        let _ = fs::remove_file(pid_file());
        println!("stopped LocalStack (pid {pid})");
    } else if compose_marker().exists() {
        run(Command::new("docker")
            .args(["compose", "down"])
            .current_dir(project_root()))?;
        let _ = fs::remove_file(compose_marker());
        println!("stopped LocalStack (docker compose)");
    } else if sqs_is_healthy() {
        println!("LocalStack answers on {ADDRESS} but xtask did not start it: leaving it alone");
    } else {
        println!("LocalStack is not running");
    }
    Ok(())
}

pub(crate) fn status() -> Result<()> {
    let health = if sqs_is_healthy() {
        "SQS is ready"
    } else {
        "SQS is not answering"
    };
    println!("{}: {health} on {ADDRESS}", who_runs_it());
    Ok(())
}

pub(crate) fn logs() -> Result<()> {
    if compose_marker().exists() {
        return run(Command::new("docker")
            .args(["compose", "logs", "--tail", "200"])
            .current_dir(project_root()));
    }
    let path = log_file();
    let text = fs::read_to_string(&path).map_err(|e| {
        format!(
            "no log at {} ({e}): LocalStack was not started on the host by xtask",
            path.display()
        )
    })?;
    print!("{}", last_lines(&text, 200));
    println!("(log file: {})", path.display());
    Ok(())
}

fn who_runs_it() -> String {
    if let Some(pid) = our_host_pid() {
        format!("host process pid {pid}, log {}", log_file().display())
    } else if compose_marker().exists() {
        "docker compose (compose.yaml)".to_owned()
    } else if sqs_is_healthy() {
        "started outside xtask".to_owned()
    } else {
        "not running".to_owned()
    }
}

fn use_docker() -> bool {
    match std::env::var("FIFO_LOCALSTACK").as_deref() {
        Ok("host") => false,
        Ok("docker") => true,
        _ => Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
    }
}

/// Creates `.localstack/venv` with the pinned release, unless a venv with the
/// same pins is already there (the stamp file records them).
fn install_on_host() -> Result<()> {
    let python = find_python()?;
    let stamp = venv().join("fifo-pins.txt");
    let wanted = format!("{python}\n{CONSTRAINTS}");
    if fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(());
    }
    let install_log = state_dir().join("install.log");
    println!(
        "installing LocalStack {VERSION} from PyPI into {} (once; log: {})",
        venv().display(),
        install_log.display()
    );
    let _ = fs::remove_dir_all(venv());
    let venv_output = Command::new("python3")
        .args(["-m", "venv"])
        .arg(venv())
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !venv_output.status.success() {
        return Err(format!(
            "python3 cannot create a virtualenv: {}\nhint: install the venv module (Debian/Ubuntu: apt-get install python3-venv)",
            String::from_utf8_lossy(&venv_output.stderr).trim()
        ));
    }
    let constraints = state_dir().join("constraints.txt");
    fs::write(&constraints, CONSTRAINTS).map_err(|e| e.to_string())?;
    let log = fs::File::create(&install_log).map_err(|e| e.to_string())?;
    let status = Command::new(venv().join("bin/pip"))
        .args(["install", "--disable-pip-version-check", "-c"])
        .arg(&constraints)
        .args(["localstack-core[base-runtime]", "service_identity"])
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .status()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if !status.success() {
        let text = fs::read_to_string(&install_log).unwrap_or_default();
        return Err(format!(
            "pip could not install LocalStack {VERSION} (is PyPI reachable?). Last lines of {}:\n{}",
            install_log.display(),
            last_lines(&text, 15)
        ));
    }
    fs::write(&stamp, wanted).map_err(|e| e.to_string())
}

/// Returns python3's version line after checking LocalStack can run on it.
fn find_python() -> Result<String> {
    let output = Command::new("python3")
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .map_err(|_| {
            "python3 not found: LocalStack's host install needs Python 3.10 or 3.11\n\
             hint: install it (Debian/Ubuntu: apt-get install python3 python3-venv) or start a Docker engine"
                .to_owned()
        })?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let (major, minor) = version.split_once('.').unwrap_or(("0", "0"));
    let supported = major == "3" && matches!(minor.parse::<u32>(), Ok(10..=13));
    if !supported {
        return Err(format!(
            "python3 is version {version}; LocalStack {VERSION} needs Python 3.10 to 3.13\n\
             hint: install a supported python3 or start a Docker engine"
        ));
    }
    Ok(format!("python {version}"))
}

fn start_on_host() -> Result<u32> {
    let log = fs::File::create(log_file()).map_err(|e| e.to_string())?;
    let volume = state_dir().join("volume");
    fs::create_dir_all(&volume).map_err(|e| e.to_string())?;
    let child = Command::new(venv().join("bin/python"))
        .args(["-m", "localstack.runtime.main"])
        .env("SERVICES", "sqs")
        .env("GATEWAY_LISTEN", ADDRESS)
        .env("EAGER_SERVICE_LOADING", "1")
        .env("DNS_ADDRESS", "0")
        .env("SQS_ENDPOINT_STRATEGY", "off")
        .env("LOCALSTACK_HOST", "localhost:4566")
        .env("DISABLE_EVENTS", "1")
        .env("LOCALSTACK_VOLUME_DIR", &volume)
        .env_remove("LOCALSTACK_AUTH_TOKEN")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        // Its own process group, so `down` can stop it with its children and
        // a Ctrl-C in this terminal does not reach it.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start LocalStack: {e}"))?;
    let pid = child.id();
    fs::write(pid_file(), pid.to_string()).map_err(|e| e.to_string())?;
    println!(
        "started LocalStack {VERSION} on the host (pid {pid}, log {})",
        log_file().display()
    );
    Ok(pid)
}

fn wait_until_healthy(pid: Option<u32>) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if sqs_is_healthy() {
            return Ok(());
        }
        let died = pid.is_some_and(|pid| !is_alive(pid));
        if died || Instant::now() > deadline {
            let what = if died {
                "LocalStack exited during start-up"
            } else {
                "LocalStack's SQS did not become ready in time"
            };
            let text = fs::read_to_string(log_file()).unwrap_or_default();
            if died {
                let _ = fs::remove_file(pid_file());
            }
            return Err(format!(
                "{what}; last lines of {} (a \"No component plugins found\" error means a Python dependency failed to import):\n{}",
                log_file().display(),
                last_lines(&text, 15)
            ));
        }
        sleep(Duration::from_millis(100));
    }
}

/// The pid in our pid file, if that process is alive and is LocalStack.
fn our_host_pid() -> Option<u32> {
    let pid: u32 = fs::read_to_string(pid_file()).ok()?.trim().parse().ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let is_localstack = String::from_utf8_lossy(&cmdline).contains("localstack");
    if is_alive(pid) && is_localstack {
        Some(pid)
    } else {
        let _ = fs::remove_file(pid_file());
        None
    }
}

/// Alive and not a zombie (a child we started and killed stays a zombie
/// until this process exits).
fn is_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        }
        Err(_) => false,
    }
}

fn port_is_taken() -> bool {
    let address: SocketAddr = ADDRESS.parse().expect("valid address");
    TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok()
}

fn sqs_is_healthy() -> bool {
    health().is_some_and(|body| {
        body.contains("\"sqs\": \"running\"") || body.contains("\"sqs\": \"available\"")
    })
}

fn health() -> Option<String> {
    let address: SocketAddr = ADDRESS.parse().expect("valid address");
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(300)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /_localstack/health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(count);
    lines[start..].join("\n") + "\n"
}
