//! The web site: a model list, a model page (its artifacts per target and how to use them) and
//! a build page with its log. Server-rendered HTML, every value escaped; the same visibility
//! rules as the API (a browser sends no token: public repositories only).
use crate::meta::{Job, JobState};
use crate::names;
use crate::server::{can_see, repo_detail, ApiError, Hub};
use crate::HubError;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::HeaderMap;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Hub>> {
    Router::new().route("/", get(index)).route("/models/{owner}/{name}", get(model)).route("/builds/{id}", get(build))
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t} · xforge hub</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}}\
         table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.4em;text-align:left}}\
         pre{{background:#f4f4f4;padding:1em;overflow-x:auto}}code{{background:#f4f4f4;padding:0 .2em}}\
         .done{{color:#080}}.failed{{color:#b00}}.running{{color:#a60}}.queued{{color:#666}}\
         header a{{text-decoration:none;color:#222;font-weight:bold}}</style></head><body>\
         <header><a href=\"/\">xforge hub</a></header><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    ))
}

fn when(ms: i64) -> String {
    // days since the epoch to a civil date (UTC), no clock crate needed
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

fn state(j: &Job) -> String {
    format!("<span class=\"{0}\">{0}</span>", j.state.name())
}

async fn index(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Html<String>, ApiError> {
    let who = hub.principal(&headers).await?;
    let (id, all) = match &who {
        Some(p) if p.scopes.allows(crate::auth::Scope::Admin) => (Some(p.user.id), true),
        Some(p) if p.scopes.allows(crate::auth::Scope::Read) => (Some(p.user.id), false),
        _ => (None, false),
    };
    let query = q.get("q").map(String::as_str).filter(|s| !s.is_empty() && s.len() <= 128);
    let repos = hub.meta.list_repos(id, all, query, 500).await?;
    let mut b = String::new();
    let _ = write!(
        b,
        "<form><input name=\"q\" placeholder=\"search models\" value=\"{}\"> <button>search</button></form>",
        esc(query.unwrap_or(""))
    );
    if repos.is_empty() {
        b.push_str("<p>No models yet. Push one with <code>xforge hub push OWNER/NAME model.onnx</code>.</p>");
    } else {
        b.push_str("<table><tr><th>model</th><th>created</th></tr>");
        for r in &repos {
            let n = r.full_name();
            let _ = write!(
                b,
                "<tr><td><a href=\"/models/{0}\">{0}</a>{1}</td><td>{2}</td></tr>",
                esc(&n),
                if r.private { " (private)" } else { "" },
                when(r.created)
            );
        }
        b.push_str("</table>");
    }
    Ok(page("Models", &b))
}

async fn model(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    UrlPath((owner, name)): UrlPath<(String, String)>,
) -> Result<Html<String>, ApiError> {
    let who = hub.principal(&headers).await?;
    let rn = names::RepoName::new(&owner, &name)?;
    let repo = match hub.meta.repo(&rn.owner, &rn.name).await? {
        Some(r) if can_see(&hub, &r, &who).await? => r,
        _ => return Err(HubError::NotFound(format!("repository {rn}")).into()),
    };
    let d = repo_detail(&hub, repo).await?;
    let full = d.repo.full_name();
    let base = hub.cfg.public_url.clone().unwrap_or_else(|| "http://HUB".into());
    let mut b = String::new();
    match d.revisions.first() {
        Some(r) => {
            let _ = write!(
                b,
                "<p>Revision {} — <code>{}</code>, {} bytes, sha256 <code>{}</code>, pushed {}.</p>",
                r.number,
                esc(&r.filename),
                r.size,
                r.digest,
                when(r.created)
            );
        }
        None => b.push_str("<p>No revision pushed yet.</p>"),
    }
    b.push_str("<h2>Artifacts</h2>");
    if d.artifacts.is_empty() {
        b.push_str("<p>None built yet for the newest revision.</p>");
    } else {
        b.push_str("<table><tr><th>target</th><th>precision</th><th>batch</th><th>compiler</th><th>size</th><th>sha256</th></tr>");
        let mut rows = d.artifacts.clone();
        rows.sort_by(|a, b| (&a.key.target, &a.key.precision).cmp(&(&b.key.target, &b.key.precision)));
        for a in &rows {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/api/v1/blobs/{4}\"><code>{}</code></a></td></tr>",
                esc(&a.key.target),
                esc(&a.key.precision),
                if a.key.batch.is_empty() { "static".into() } else { names::batch_text(&a.key.batch) },
                esc(&a.key.compiler_version),
                a.size,
                a.blob
            );
        }
        b.push_str("</table>");
    }
    let target = d.artifacts.first().map(|a| a.key.target.clone()).unwrap_or_else(|| "sm_90".into());
    let _ = write!(
        b,
        "<h2>Use it</h2><pre>xforge hub login --server {base} --token $TOKEN\n\
         xforge hub pull {full} --target {target} -o model.xfa   # builds it first when needed\n\
         xforge run model.xfa --input NAME=FILE.npy --output-dir out</pre>\
         <p>From Rust:</p><pre>let client = xforge_hub::Client::from_env()?;\n\
         let artifact = client.pull_artifact(\"{full}\", \"{target}\")?;   // verified: signature, sha256, format\n\
         // or the verified file in the cache, for a session on the GPU:\n\
         let pulled = client.pull(\"{full}\", &amp;xforge_hub::BuildSpec::new(\"{target}\"))?;\n\
         let session = xforge_runtime::Session::load(&amp;pulled.path, 0)?;</pre>",
        base = esc(&base),
        full = esc(&full),
        target = esc(&target)
    );
    b.push_str("<h2>Builds</h2>");
    if d.jobs.is_empty() {
        b.push_str("<p>No builds requested.</p>");
    } else {
        b.push_str("<table><tr><th>build</th><th>target</th><th>precision</th><th>state</th><th>worker</th><th>updated</th></tr>");
        for j in &d.jobs {
            let _ = write!(
                b,
                "<tr><td><a href=\"/builds/{0}\">#{0}</a></td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td></tr>",
                j.id,
                esc(&j.key.target),
                esc(&j.key.precision),
                state(j),
                esc(j.worker.as_deref().unwrap_or("")),
                when(j.updated)
            );
        }
        b.push_str("</table>");
    }
    Ok(page(&full, &b))
}

async fn build(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Html<String>, ApiError> {
    let who = hub.principal(&headers).await?;
    let id = id.parse::<i64>().map_err(|_| HubError::BadRequest("build: not a number".into()))?;
    let job = hub.meta.job(id).await?.ok_or_else(|| HubError::NotFound(format!("build {id}")))?;
    let visible = match hub.meta.repo_by_id(job.repo_id).await? {
        Some(r) => can_see(&hub, &r, &who).await?,
        None => false,
    };
    if !visible {
        return Err(HubError::NotFound(format!("build {id}")).into());
    }
    let mut b = String::new();
    let _ = write!(
        b,
        "<p>Model <a href=\"/models/{0}\">{0}</a> revision {1}, target <b>{2}</b>, precision {3}, batch {4}, compiler {5}.</p>\
         <p>State {6}, attempts {7}{8}, last update {9}.</p>",
        esc(&job.repo),
        job.revision,
        esc(&job.key.target),
        esc(&job.key.precision),
        if job.key.batch.is_empty() { "static".into() } else { names::batch_text(&job.key.batch) },
        esc(&job.key.compiler_version),
        state(&job),
        job.attempts,
        job.worker.as_deref().map(|w| format!(", worker {}", esc(w))).unwrap_or_default(),
        when(job.updated)
    );
    if let Some(e) = &job.error {
        let _ = write!(b, "<h2>Error</h2><pre class=\"failed\">{}</pre>", esc(e));
    }
    if job.state == JobState::Running || job.state == JobState::Queued {
        b.push_str("<p>Reload for progress.</p>");
    }
    let _ = write!(b, "<h2>Log</h2><pre>{}</pre>", esc(&job.log));
    Ok(page(&format!("Build #{id}"), &b))
}
