use std::sync::Arc;
use std::time::{Duration, Instant};
use estafeta_config::{Secret, WebhookSettings};
use estafeta_core::{DeliveryId, Destination, OutboundMessage};
use estafeta_destinations::{HttpClients, Webhook};
use estafeta_testkit::WebhookReceiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_tmp() {
    for counting in [true, false] {
        let rx = if counting { WebhookReceiver::builder().secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").counting_only().start().await } else { WebhookReceiver::start_with_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").await };
        let s = WebhookSettings { id: "h".into(), url: Secret::new(rx.url()), signing_key: Some(Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into())), headers: vec![], timeout: Duration::from_secs(5), allow_private_networks: true, batch: None };
        let hook = Arc::new(Webhook::new(&s, &HttpClients::new(), 32).unwrap());
        let ce = serde_json::json!({"specversion": "1.0", "id": "e1", "source": "/test", "type": "test"});
        let ev = Arc::new(estafeta_core::event::parse_cloudevent(ce, &Default::default(), "http", chrono::Utc::now()).unwrap());
        let n = 20_000usize; let conc = 32;
        let started = Instant::now();
        let mut tasks = vec![];
        for _ in 0..conc {
            let hook = hook.clone(); let ev = ev.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..n / conc {
                    let m = OutboundMessage { delivery_id: DeliveryId::new(), event: ev.clone(), body: bytes::Bytes::from_static(&[b'x'; 300]), content_type: "application/json", attempt: 1 };
                    hook.send(&m).await.unwrap();
                }
            }));
        }
        for t in tasks { t.await.unwrap(); }
        let el = started.elapsed();
        println!("counting={counting} {} req in {:?}: {:.0}/s, bad={}", rx.count(), el, rx.count() as f64 / el.as_secs_f64(), rx.bad_signatures());
    }
}
