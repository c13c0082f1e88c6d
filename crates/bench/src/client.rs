//! One request's lifecycle: on `/v1/inference`, POST, long-poll while pending, judge the
//! answer; on the OpenAI and KServe V2 doors, one POST of every input and its answer judged
//! (`doors.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use batchgate_protocol::api::InferenceRequest;
use reqwest::Url;
use tokio::time::Instant;

use crate::args::{Api, Config};
use crate::doors::{self, DEFAULT_MODEL};
use crate::outcome::{judge, read_answer, Answer, Outcome};
use crate::BenchError;

/// `client_id` sent with every request, so server logs can tell bench traffic apart.
const CLIENT_ID: &str = "batchgate-bench";

/// Longest wait for a TCP connection; the request's own timeout still bounds it further.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Least time between two polls of one task. A server that answers `PENDING` at once (a
/// `wait_ms` capped to zero) would otherwise be polled in a hot loop.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The HTTP client shared by every request of a run: plain http/1.1, one connection per request
/// in flight, no proxy (a load generator must measure the server, not a proxy).
pub(crate) fn build_http(config: &Config) -> Result<reqwest::Client, BenchError> {
    batchgate_net::install_crypto_provider();
    let builder = reqwest::Client::builder();
    let builder = if config.http2 {
        builder.http2_prior_knowledge()
    } else {
        builder
    };
    builder
        .pool_max_idle_per_host(config.max_connections)
        .tcp_nodelay(true)
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT.min(config.timeout))
        .user_agent(CLIENT_ID)
        .build()
        .map_err(BenchError::HttpClient)
}

/// Sends requests to the servers of `--url`, each request to the next in turn (a client behind
/// a round-robin load balancer). Shared by all request tasks behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Client {
    /// Pooled connections; cloning a `reqwest::Client` is shallow.
    http: reqwest::Client,
    /// Where the requests go, in turn.
    servers: Vec<Server>,
    /// Requests sent so far: picks the next server.
    turn: AtomicUsize,
    /// The `wait_ms` to send (lowered to the time left before the request's timeout).
    wait_ms: u64,
    /// Budget of one request, polls included.
    timeout: Duration,
    /// Whether outputs are compared with `sim_output(input)`.
    check: bool,
    /// `Authorization` value sent with every call, if any.
    authorization: Option<String>,
    /// The front door the requests go through.
    api: Api,
    /// The model named (`/v1/inference` leaves it out when `None`).
    model: Option<String>,
}

/// One server's endpoints.
#[derive(Debug)]
struct Server {
    /// `{url}/v1/inference`.
    inference_url: Url,
    /// `{url}/v1/result`, to which a task id is appended.
    result_url: Url,
    /// `{url}/v1/embeddings` or `{url}/v2/models/{model}/infer`, with `--api openai|kserve`.
    door_url: Url,
}

impl Client {
    /// A client for the servers at `config.urls`.
    pub(crate) fn new(http: reqwest::Client, config: &Config) -> Result<Self, BenchError> {
        let model = config.model.as_deref().unwrap_or(DEFAULT_MODEL);
        let servers = config
            .urls
            .iter()
            .map(|base| Server::new(base, config.api, model))
            .collect::<Result<_, _>>()?;
        Ok(Client {
            http,
            api: config.api,
            servers,
            turn: AtomicUsize::new(0),
            model: config.model.clone(),
            wait_ms: config.wait_ms,
            timeout: config.timeout,
            check: config.check,
            authorization: config.bearer.as_ref().map(|t| format!("Bearer {t}")),
        })
    }

    /// The server of the next request.
    fn next_server(&self) -> &Server {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        &self.servers[turn % self.servers.len()]
    }

    /// The request with the bearer token, if there is one.
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.authorization {
            Some(value) => request.header(reqwest::header::AUTHORIZATION, value),
            None => request,
        }
    }

    /// Runs one request of `inputs` (one with `--api inference`) to its end: never longer
    /// than the timeout, never panics on what the server says.
    pub(crate) async fn call(&self, inputs: &[Arc<str>]) -> Outcome {
        let deadline = Instant::now() + self.timeout;
        let server = self.next_server();
        let run = async {
            match (self.api, inputs) {
                (Api::Inference, [input]) => self.lifecycle(server, input, deadline).await,
                // The flags allow one input per request on this door: anything else is a bug.
                (Api::Inference, _) => Outcome::BadResponse,
                (Api::Openai | Api::Kserve, _) => self.door_call(server, inputs).await,
            }
        };
        tokio::time::timeout_at(deadline, run)
            .await
            .unwrap_or(Outcome::Timeout)
    }

    /// One call of the OpenAI or KServe V2 door with every input, its answer judged.
    async fn door_call(&self, server: &Server, inputs: &[Arc<str>]) -> Outcome {
        let body = match self.api {
            Api::Kserve => doors::kserve_body(inputs),
            Api::Inference | Api::Openai => {
                doors::openai_body(self.model.as_deref().unwrap_or(DEFAULT_MODEL), inputs)
            }
        };
        let response = match self
            .authorized(self.http.post(server.door_url.clone()))
            .json(&body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(error) => return Outcome::of_transport_error(&error),
        };
        let status = response.status().as_u16();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) => return Outcome::of_transport_error(&error),
        };
        match self.api {
            Api::Kserve => doors::judge_kserve(status, &body, inputs, self.check),
            Api::Inference | Api::Openai => doors::judge_openai(status, &body, inputs, self.check),
        }
    }

    async fn lifecycle(&self, server: &Server, input: &str, deadline: Instant) -> Outcome {
        let body = InferenceRequest {
            input: input.to_owned(),
            // With a token the server knows who calls, and a differing label is refused.
            client_id: self.authorization.is_none().then(|| CLIENT_ID.to_owned()),
            timeout_ms: None,
            model: self.model.clone(),
        };
        let mut url = server.inference_url.clone();
        url.set_query(Some(&format!("wait_ms={}", self.wait_for(deadline))));
        let mut answer = match self
            .authorized(self.http.post(url))
            .json(&body)
            .send()
            .await
        {
            Ok(response) => answer_of(response).await,
            Err(error) => return Outcome::of_transport_error(&error),
        };
        loop {
            match answer {
                Answer::Done(view) => return judge(&view, input, self.check),
                Answer::Ended(outcome) => return outcome,
                Answer::Pending { task_id } => {
                    let polled_at = Instant::now();
                    let url = self.result_url_of(server, &task_id, deadline);
                    answer = match self.authorized(self.http.get(url)).send().await {
                        Ok(response) => answer_of(response).await,
                        Err(error) => return Outcome::of_transport_error(&error),
                    };
                    if matches!(answer, Answer::Pending { .. }) {
                        tokio::time::sleep_until(polled_at + MIN_POLL_INTERVAL).await;
                    }
                }
            }
        }
    }

    /// `wait_ms` for a call made now: the configured wait, but no later than the deadline, so
    /// the server answers before the client gives up.
    fn wait_for(&self, deadline: Instant) -> u64 {
        let left = deadline.saturating_duration_since(Instant::now());
        self.wait_ms
            .min(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
    }

    /// `{url}/v1/result/{task_id}?wait_ms=N` on the server the task was submitted to, the id
    /// escaped as one path segment (it comes from the server, so it is not trusted to be
    /// URL-safe).
    fn result_url_of(&self, server: &Server, task_id: &str, deadline: Instant) -> Url {
        let mut url = server.result_url.clone();
        url.path_segments_mut()
            .expect("an http:// URL has path segments. This is a bug.")
            .push(task_id);
        url.set_query(Some(&format!("wait_ms={}", self.wait_for(deadline))));
        url
    }
}

/// Reads a whole response into an [`Answer`].
async fn answer_of(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    match response.bytes().await {
        Ok(body) => read_answer(status, &body),
        Err(error) => Answer::Ended(Outcome::of_transport_error(&error)),
    }
}

impl Server {
    /// The endpoints under `base` (a validated http:// URL without a trailing slash).
    fn new(base: &str, api: Api, model: &str) -> Result<Self, BenchError> {
        let parse = |path: &str| {
            Url::parse(&format!("{base}{path}"))
                .map_err(|error| BenchError::InvalidArgs(format!("--url: {error}")))
        };
        let door_url = match api {
            Api::Kserve => {
                let mut url = parse("/v2/models")?;
                url.path_segments_mut()
                    .map_err(|()| BenchError::InvalidArgs("--url: not a base URL".into()))?
                    .push(model)
                    .push("infer");
                url
            }
            Api::Inference | Api::Openai => parse("/v1/embeddings")?,
        };
        Ok(Server {
            inference_url: parse("/v1/inference")?,
            result_url: parse("/v1/result")?,
            door_url,
        })
    }
}
