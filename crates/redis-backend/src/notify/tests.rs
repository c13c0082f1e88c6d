use super::*;

fn notice(id: &str) -> Notice {
    Notice {
        task_id: id.into(),
        status: TaskStatus::Success,
        output: Some(Output::Text(format!("out {id}"))),
        error: None,
        completed_at: 9,
    }
}

fn pack(strings: &[Vec<u8>]) -> Vec<u8> {
    let items: Vec<&[u8]> = strings.iter().map(Vec::as_slice).collect();
    pack_notices(&items)
}

/// A message as the settle script publishes it.
fn message(notices: &[Notice]) -> Vec<u8> {
    let keys = Keys::new("bg", 4);
    let mut strings = Vec::new();
    for n in notices {
        let value = match (&n.output, &n.error) {
            (Some(output), _) => output.encode(),
            (None, error) => error.clone().unwrap_or_default().into_bytes(),
        };
        let status = if n.status == TaskStatus::Success {
            'S'
        } else {
            'F'
        };
        let head = record::head(1, Some("bob"));
        strings.push(keys.result(&n.task_id).into_bytes());
        strings.push(record::final_record(
            status,
            Some(&head),
            n.completed_at,
            &value,
        ));
    }
    pack(&strings)
}

#[test]
fn notices_read_back_and_anything_else_is_refused() {
    let failed = Notice {
        task_id: "7f-x".into(),
        status: TaskStatus::Failed,
        output: None,
        error: Some("worker: 12:30 timeout".into()),
        completed_at: 11,
    };
    let mut long = notice("0c-9");
    long.output = Some(Output::Text("x".repeat(70_000)));
    let mut many: Vec<Notice> = (0..20).map(|i| notice(&format!("{i:02x}-n"))).collect();
    many.push(failed);
    many.push(long);
    // A typed output travels in its stored form, not as text.
    let mut vector = notice("0d-v");
    vector.output = Some(Output::Vector(vec![0.5, -1.0, 3.0]));
    many.push(vector);
    assert_eq!(parse_notices(&message(&many)), Some(many.clone()));
    let good = message(&[notice("a")]);
    let mut trailing = good.clone();
    trailing.push(0xa0);
    for bad in [
        b"not a notice".to_vec(),
        good[..good.len() - 1].to_vec(),
        trailing,
        // A pending record is no notice; an odd count is no list of pairs.
        pack(&["bg:{p0}:rec:a".into(), "P1;0;".into()]),
        pack(&["bg:{p0}:rec:a".into()]),
    ] {
        assert_eq!(parse_notices(&bad), None, "{bad:?}");
    }
}

#[tokio::test]
async fn wake_hands_the_notice_to_every_waiter_of_its_task() {
    let n = Notifier::default();
    let a1 = n.register("a");
    let a2 = n.register("a");
    let mut b = n.register("b");
    n.wake(&message(&[notice("a"), notice("c")]));
    assert_eq!(a1.await.expect("notice"), Wake::Done(notice("a")));
    assert_eq!(a2.await.expect("notice"), Wake::Done(notice("a")));
    n.wake(b"not a notice");
    assert!(b.try_recv().is_err() && !n.lock().is_empty());
    drop(b);
    n.prune();
    assert!(n.lock().is_empty());
    // A (re)subscription wakes every waiter to read the store once.
    let c = n.register("c");
    n.recheck_all();
    assert_eq!(c.await.expect("recheck"), Wake::Recheck);
    assert!(n.is_empty());
}
