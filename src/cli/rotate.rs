//! `rotor rotate --tenant T | --all ...`: starts an emergency rotation job through the
//! running rotor's admin API (`POST /admin/secrets/rotate-all`) and follows it (`GET
//! /admin/jobs/{id}`) to the end: a progress bar on a terminal, plain progress lines
//! otherwise (a log, CI), and a summary table. Ctrl-C stops following, not the job: it
//! prints the job's id and how to cancel it (`rotor rotate --cancel JOB_ID`).

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use crate::api::JobView;
use crate::config::Config;

/// How often the job's progress is read.
const POLL: Duration = Duration::from_millis(250);

/// How often a plain progress line is printed while the counts change.
const LINE_EVERY: Duration = Duration::from_secs(1);

/// The job options of `rotor rotate`.
#[derive(Debug, Clone, Default, Args)]
pub struct JobArgs {
    /// Rotate every secret of this tenant (an emergency rotation job).
    #[arg(long = "tenant", id = "tenant_flag", value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Only secrets under this policy.
    #[arg(long, value_name = "POLICY")]
    pub policy: Option<String>,
    /// Only secrets whose key matches (`*` any run, `?` one character).
    #[arg(long = "key-glob", value_name = "GLOB")]
    pub key_glob: Option<String>,
    /// Rotate every managed secret (asks rotor with `"confirm": "rotate-all"`).
    #[arg(long)]
    pub all: bool,
    /// Rotations started per second (rotor's default: 10).
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<u32>,
    /// Rotations in flight at once (rotor's default: 4).
    #[arg(long = "max-concurrent", value_name = "N")]
    pub max_concurrent: Option<u32>,
    /// Expire each previous version at promotion instead of keeping its grace period (the
    /// old credential leaked).
    #[arg(long = "expire-previous")]
    pub expire_previous: bool,
    /// Cancel the running job JOB_ID instead: nothing new starts, rotations in flight
    /// finish.
    #[arg(long, value_name = "JOB_ID")]
    pub cancel: Option<String>,
}

impl JobArgs {
    /// Whether no job option was given (the `TENANT KEY` form).
    pub fn is_empty(&self) -> bool {
        self.tenant.is_none()
            && self.policy.is_none()
            && self.key_glob.is_none()
            && !self.all
            && self.rate.is_none()
            && self.max_concurrent.is_none()
            && !self.expire_previous
            && self.cancel.is_none()
    }

    /// The `rotate-all` body. Values are checked by rotor, which names a bad field.
    fn body(&self) -> Value {
        let mut body = json!({});
        if let Some(t) = &self.tenant {
            body["tenantId"] = json!(t);
        }
        if self.all {
            body["all"] = json!(true);
            body["confirm"] = json!("rotate-all");
        }
        if let Some(p) = &self.policy {
            body["policy"] = json!(p);
        }
        if let Some(g) = &self.key_glob {
            body["keyGlob"] = json!(g);
        }
        if let Some(r) = self.rate {
            body["ratePerSecond"] = json!(r);
        }
        if let Some(c) = self.max_concurrent {
            body["maxConcurrent"] = json!(c);
        }
        if self.expire_previous {
            body["expirePrevious"] = json!(true);
        }
        body
    }
}

/// Runs `rotor rotate` with job options: starts the job and follows it, or cancels one.
pub fn run(cfg: &Config, args: &JobArgs) -> Result<(), String> {
    let (addr, token) = super::admin_endpoint(cfg)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        let client = crate::http_client::client(Duration::from_secs(15), None, None)?;
        let call = |method: reqwest::Method, path: String, body: Option<Value>| {
            let mut request = client
                .request(method, format!("http://{addr}{path}"))
                .bearer_auth(token.expose_secret());
            if let Some(body) = body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            async move {
                let response = request.send().await.map_err(|e| {
                    let why = crate::http_client::failure(&e, false);
                    format!("cannot reach rotor at {addr}: {why} (is `rotor run` running?)")
                })?;
                let status = response.status().as_u16();
                let bytes = response.bytes().await.map_err(|e| {
                    let why = crate::http_client::failure(&e, false);
                    format!("no answer from rotor at {addr}: {why}")
                })?;
                Ok::<_, String>((
                    status,
                    serde_json::from_slice::<Value>(&bytes).unwrap_or_default(),
                ))
            }
        };
        if let Some(id) = &args.cancel {
            let (status, answer) =
                call(reqwest::Method::DELETE, format!("/admin/jobs/{id}"), None).await?;
            if status != 200 {
                return Err(format!(
                    "cancel of job {id} refused {}",
                    super::api_error(status, &answer)
                ));
            }
            let view: JobView = serde_json::from_value(answer)
                .map_err(|e| format!("unexpected answer from rotor: {e}"))?;
            println!(
                "job {id} cancelled: nothing new starts; {} rotations in flight finish",
                view.in_flight
            );
            return Ok(());
        }
        let (status, answer) = call(
            reqwest::Method::POST,
            "/admin/secrets/rotate-all".into(),
            Some(args.body()),
        )
        .await?;
        if status != 202 {
            return Err(format!(
                "rotation job refused {}",
                super::api_error(status, &answer)
            ));
        }
        let view: JobView = serde_json::from_value(answer)
            .map_err(|e| format!("unexpected answer from rotor: {e}"))?;
        let id = view.job_id.clone();
        println!(
            "job {id} started: {} secrets ({}), {} per second, {} at once{}",
            view.total,
            view.selector.describe(),
            view.rate_per_second,
            view.max_concurrent,
            if view.expire_previous {
                ", previous versions expire at promotion"
            } else {
                ""
            }
        );
        let started = Instant::now();
        let follow = follow(&call, &id, view);
        tokio::pin!(follow);
        let last = tokio::select! {
            last = &mut follow => last?,
            _ = tokio::signal::ctrl_c() => {
                println!();
                println!("stopped following job {id}; it keeps running on rotor.");
                println!("  progress: GET /admin/jobs/{id}");
                println!("  cancel:   rotor rotate -c CONFIG --cancel {id}");
                return Err("interrupted".into());
            }
        };
        print_summary(&last, started.elapsed());
        match last.state.as_str() {
            "finished" if last.failed == 0 => Ok(()),
            "finished" => Err(format!(
                "{} of {} rotations failed",
                last.failed, last.total
            )),
            other => Err(format!("job {id} was {other}")),
        }
    })
}

/// Polls the job until it is over (finished, or cancelled with nothing left in flight),
/// showing progress; returns its last view.
async fn follow<F, Fut>(call: &F, id: &str, mut view: JobView) -> Result<JobView, String>
where
    F: Fn(reqwest::Method, String, Option<Value>) -> Fut,
    Fut: std::future::Future<Output = Result<(u16, Value), String>>,
{
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(view.total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} {per_sec} eta {eta} {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    let mut printed: Option<(u64, u64, u64)> = None;
    let mut last_line: Option<Instant> = None;
    loop {
        let counts = (view.done, view.failed, view.in_flight);
        match &bar {
            Some(bar) => {
                bar.set_position(view.done + view.failed);
                bar.set_message(format!(
                    "failed {} in flight {}",
                    view.failed, view.in_flight
                ));
            }
            None if printed != Some(counts)
                && last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY) =>
            {
                println!(
                    "job {id}: {} done, {} failed, {} in flight, {} pending of {}",
                    view.done, view.failed, view.in_flight, view.pending, view.total
                );
                printed = Some(counts);
                last_line = Some(Instant::now());
            }
            None => {}
        }
        if view.finished_at.is_some() {
            if let Some(bar) = &bar {
                bar.finish();
            }
            return Ok(view);
        }
        tokio::time::sleep(POLL).await;
        let (status, answer) =
            call(reqwest::Method::GET, format!("/admin/jobs/{id}"), None).await?;
        if status != 200 {
            return Err(format!(
                "cannot read job {id} {}",
                super::api_error(status, &answer)
            ));
        }
        view = serde_json::from_value(answer)
            .map_err(|e| format!("unexpected answer from rotor: {e}"))?;
    }
}

fn print_summary(view: &JobView, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rows = [
        ("job", view.job_id.clone()),
        ("state", view.state.clone()),
        ("selector", view.selector.describe()),
        ("total", view.total.to_string()),
        ("done", view.done.to_string()),
        ("failed", view.failed.to_string()),
        ("not started", view.pending.to_string()),
        ("elapsed", format!("{secs:.1}s")),
        (
            "rate",
            format!("{:.1}/s", (view.done + view.failed) as f64 / secs),
        ),
    ];
    println!();
    for (name, value) in rows {
        println!("{name:<12} {value}");
    }
}

/// `rotor rotate --tenant ...` in the CLI's help and errors.
pub fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(super::EXIT_BAD_CONFIG)
}
