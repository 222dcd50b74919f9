//! `estafeta bench --scenario nats`: NATS JetStream in, NATS JetStream out. The baseline is
//! the broker's own client in the same run — publishing the input with acknowledgements,
//! then reading it back through a durable pull consumer with explicit acks — and then
//! Estafeta reads the same input with its `kind: nats` source, stores every message in its
//! log (fsync'd group commits) and publishes it with `kind: nats` to an output stream,
//! acknowledged by JetStream.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt as _;

use super::BenchArgs;
use super::broker::{Baseline, BrokerReport, payload, render, run_estafeta};
use super::cdc::rate;
use super::procfs;

/// The target: messages per second NATS to NATS with durability on.
const GOAL: f64 = 20_000.0;
/// Publishes awaiting their acknowledgement at once in the producer baseline.
const WINDOW: usize = 2_048;

pub(super) async fn run(args: &BenchArgs, binary: PathBuf) -> anyhow::Result<ExitCode> {
    estafeta_destinations::install_crypto_provider();
    super::probe::wait_quiet(args.quiet_wait, procfs::ticks_per_sec()).await;
    let n = args.events.unwrap_or(200_000);
    let pad = "x".repeat(args.payload_bytes.saturating_sub(24));
    let url = args.nats_url.clone();
    let client = async_nats::connect(&url)
        .await
        .with_context(|| format!("connecting to NATS at {url} (--nats-url)"))?;
    let js = jetstream::new(client);
    let tag = format!("{:08x}", rand::random::<u32>());
    let (input, output) = (format!("BENCH_IN_{tag}"), format!("BENCH_OUT_{tag}"));
    let (in_subject, out_subject) = (format!("bench_in_{tag}"), format!("bench_out_{tag}"));
    for (name, subject) in [(&input, &in_subject), (&output, &out_subject)] {
        js.create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{subject}.>")],
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating the stream {name}"))?;
    }
    let result = measure(args, binary, &js, n, &pad, &tag).await;
    for name in [&input, &output] {
        let _ = js.delete_stream(name).await;
    }
    let report = result?;
    super::emit(args, &report, || render(&report, args.markdown))?;
    Ok(super::outcome(
        args,
        report.output_messages >= n,
        report.target_met,
    ))
}

async fn measure(
    args: &BenchArgs,
    binary: PathBuf,
    js: &jetstream::Context,
    n: u64,
    pad: &str,
    tag: &str,
) -> anyhow::Result<BrokerReport> {
    let (input, output) = (format!("BENCH_IN_{tag}"), format!("BENCH_OUT_{tag}"));
    eprintln!("nats: publishing {n} messages with the broker's client…");
    let start = Instant::now();
    let mut acks = VecDeque::with_capacity(WINDOW);
    for seq in 0..n {
        if acks.len() == WINDOW
            && let Some(ack) = acks.pop_front()
        {
            let ack: jetstream::context::PublishAckFuture = ack;
            ack.await.context("a publish was not acknowledged")?;
        }
        acks.push_back(
            js.publish(format!("bench_in_{tag}.m"), payload(seq, pad).into())
                .await
                .context("publishing")?,
        );
    }
    for ack in acks {
        ack.await.context("a publish was not acknowledged")?;
    }
    let producer = rate(n, start.elapsed().as_secs_f64());

    eprintln!("nats: producer {producer:.0}/s; reading them back with a durable consumer…");
    let stream = js.get_stream(&input).await.context("the input stream")?;
    let baseline: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("baseline".to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await
        .context("creating the baseline consumer")?;
    let start = Instant::now();
    let mut messages = baseline
        .stream()
        .max_messages_per_batch(500)
        .messages()
        .await
        .context("pulling")?;
    let mut read = 0;
    while read < n {
        let Some(m) = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .context("the baseline consumer stalled")?
        else {
            bail!("the baseline consumer's stream ended");
        };
        m.context("pulling")?
            .ack()
            .await
            .map_err(anyhow::Error::from_boxed)
            .context("acknowledging")?;
        read += 1;
    }
    let consumer_rate = rate(n, start.elapsed().as_secs_f64());
    drop(messages);

    eprintln!("nats: consumer {consumer_rate:.0}/s; running Estafeta…");
    let url = serde_json::to_string(&args.nats_url).context("quoting the URL")?;
    let source_yaml = format!(
        "  - id: pg\n    kind: nats\n    url: {url}\n    stream: {input}\n    consumer: estafeta\n    batch_size: 1000\n    max_ack_pending: 20000\n"
    );
    let destination_yaml = format!(
        "  - id: bench-receiver\n    kind: nats\n    url: {url}\n    subject: bench_out_{tag}.m\n    concurrency: {}\n    batch: {{ max_events: 500, max_wait: 5ms }}\n",
        args.dest_concurrency
    );
    let out = js.get_stream(&output).await.context("the output stream")?;
    let base = Baseline {
        broker: "nats",
        messages: n,
        producer_per_sec: producer,
        consumer_per_sec: consumer_rate,
        goal_per_sec: GOAL,
        from_first_output: false,
    };
    run_estafeta(args, binary, source_yaml, destination_yaml, base, || {
        let mut out = out.clone();
        async move {
            Ok(out
                .info()
                .await
                .context("reading the output stream")?
                .state
                .messages)
        }
    })
    .await
}
