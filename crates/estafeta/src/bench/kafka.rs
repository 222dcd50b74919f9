//! `estafeta bench --scenario kafka`: Kafka in, Kafka out. The baseline is librdkafka's own
//! clients in the same run — an idempotent producer with `acks=all` writing the input, then a
//! consumer group reading it back and committing — and then Estafeta reads the same input
//! with its `kind: kafka` source (offsets committed after the durable append), stores every
//! message in its log (fsync'd group commits) and produces it with `kind: kafka` to an output
//! topic, delivered when the broker acknowledged.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::BenchArgs;
use super::broker::{Baseline, BrokerReport, payload, render, run_estafeta};
use super::cdc::rate;
use super::procfs;

/// The target: messages per second Kafka to Kafka with durability on.
const GOAL: f64 = 50_000.0;
/// Partitions of the input and output topics.
const PARTITIONS: i32 = 3;
/// Produced messages awaiting their acknowledgement at once in the producer baseline.
const WINDOW: usize = 10_000;

fn client(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

pub(super) async fn run(args: &BenchArgs, binary: PathBuf) -> anyhow::Result<ExitCode> {
    estafeta_destinations::install_crypto_provider();
    super::probe::wait_quiet(args.quiet_wait, procfs::ticks_per_sec()).await;
    let n = args.events.unwrap_or(500_000);
    let pad = "x".repeat(args.payload_bytes.saturating_sub(24));
    let brokers = args.kafka_brokers.clone();
    let tag = format!("{:08x}", rand::random::<u32>());
    let (input, output) = (format!("bench-in-{tag}"), format!("bench-out-{tag}"));
    let admin: AdminClient<DefaultClientContext> = client(&brokers)
        .create()
        .context("creating the Kafka admin client")?;
    let topics = [
        NewTopic::new(&input, PARTITIONS, TopicReplication::Fixed(1)),
        NewTopic::new(&output, PARTITIONS, TopicReplication::Fixed(1)),
    ];
    for result in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .with_context(|| format!("creating the bench topics on {brokers} (--kafka-brokers)"))?
    {
        if let Err((topic, code)) = result {
            bail!("the broker refused to create topic {topic}: {code}");
        }
    }
    let result = measure(args, binary, n, &pad, &input, &output).await;
    let _ = admin
        .delete_topics(&[&input, &output], &AdminOptions::new())
        .await;
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
    n: u64,
    pad: &str,
    input: &str,
    output: &str,
) -> anyhow::Result<BrokerReport> {
    let brokers = &args.kafka_brokers;
    eprintln!("kafka: producing {n} messages with librdkafka (acks=all, idempotent)…");
    let producer: FutureProducer = client(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .context("creating the producer")?;
    let start = Instant::now();
    let mut pending = VecDeque::with_capacity(WINDOW);
    for seq in 0..n {
        let key = format!("k{}", seq % 1000);
        let value = payload(seq, pad);
        let mut record = FutureRecord::to(input).key(&key).payload(&value);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push_back(delivery);
                    break;
                }
                Err((_, back)) => {
                    // The client's queue is full: wait for the oldest acknowledgement.
                    record = back;
                    let Some(oldest) = pending.pop_front() else {
                        bail!("the producer refused a message with nothing in flight");
                    };
                    acked(oldest).await?;
                }
            }
        }
        if pending.len() >= WINDOW
            && let Some(oldest) = pending.pop_front()
        {
            acked(oldest).await?;
        }
    }
    for delivery in pending {
        acked(delivery).await?;
    }
    let producer_rate = rate(n, start.elapsed().as_secs_f64());

    eprintln!("kafka: producer {producer_rate:.0}/s; reading them back in a consumer group…");
    let consumer: StreamConsumer = client(brokers)
        .set("group.id", format!("bench-baseline-{input}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating the baseline consumer")?;
    consumer.subscribe(&[input]).context("subscribing")?;
    // The clock starts at the first message: joining a new group can take a while (tansu
    // answers the first join after about 20 s), which is not reading speed.
    let mut start = Instant::now();
    let mut read = 0_u64;
    while read < n {
        tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .context("the baseline consumer stalled")?
            .context("reading")?;
        if read == 0 {
            start = Instant::now();
        }
        read += 1;
        if read.is_multiple_of(1_000) || read == n {
            consumer
                .commit_consumer_state(CommitMode::Async)
                .context("committing")?;
        }
    }
    let consumer_rate = rate(n - 1, start.elapsed().as_secs_f64());
    drop(consumer);

    eprintln!("kafka: consumer {consumer_rate:.0}/s; running Estafeta…");
    let quoted = serde_json::to_string(brokers).context("quoting the brokers")?;
    let source_yaml = format!(
        "  - id: pg\n    kind: kafka\n    brokers: {quoted}\n    topics: [{input}]\n    group_id: estafeta-{input}\n    start: earliest\n    batch_size: 2000\n"
    );
    let destination_yaml = format!(
        "  - id: bench-receiver\n    kind: kafka\n    brokers: {quoted}\n    topic: {output}\n    concurrency: {}\n    batch: {{ max_events: 1000, max_wait: 5ms }}\n",
        args.dest_concurrency
    );
    // The output is counted by reading it, as its consumers would; its partitions are
    // assigned (no group to join), so counting starts at once.
    let reader: StreamConsumer = client(brokers)
        .set("group.id", format!("bench-output-{output}"))
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the output reader")?;
    let mut partitions = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        partitions
            .add_partition_offset(output, p, Offset::Beginning)
            .context("listing the output's partitions")?;
    }
    reader.assign(&partitions).context("assigning the output")?;
    let read = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&read);
    let reading = tokio::spawn(async move {
        while reader.recv().await.is_ok() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let base = Baseline {
        broker: "kafka",
        messages: n,
        producer_per_sec: producer_rate,
        consumer_per_sec: consumer_rate,
        goal_per_sec: GOAL,
        from_first_output: true,
    };
    let report = run_estafeta(args, binary, source_yaml, destination_yaml, base, || {
        let now = read.load(Ordering::Relaxed);
        async move { Ok(now) }
    })
    .await;
    reading.abort();
    report
}

async fn acked(delivery: rdkafka::producer::DeliveryFuture) -> anyhow::Result<()> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e).context("the broker refused a message"),
        Err(_) => bail!("the producer dropped a message"),
    }
}
