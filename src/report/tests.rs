use super::*;

#[test]
fn counting_rule_and_ratio() {
    let mut c = Counts {
        lines: 10,
        events: 9,
        blank: 1,
        ..Counts::default()
    };
    c.skip("track");
    c.skip("track");
    c.reject(Reason::InvalidJson);
    c.reject(Reason::DuplicateMessageId);
    c.rows_written = 5;
    assert!(c.adds_up());
    assert_eq!(c.considered(), 7);
    assert_eq!(c.rejected_for_ratio(), 1);
    assert_eq!(c.duplicates(), 1);
    assert!((c.reject_ratio() - 1.0 / 7.0).abs() < 1e-12);
    c.rows_written = 4;
    assert!(!c.adds_up());
    // Two of the lines are batch envelopes holding 3 and 2 events: 3 more events than lines say.
    c.rows_written = 8;
    c.events = 12;
    c.batches = Batches {
        lines: 2,
        events: 5,
    };
    assert!(c.adds_up());
    c.batches.events = 4;
    assert!(!c.adds_up(), "lines no longer add up");
    assert_eq!(Counts::default().reject_ratio(), 0.0);
    // Every reason is listed, so monitoring can rely on the keys.
    assert_eq!(Counts::default().rejected.len(), Reason::ALL.len());
}

#[test]
fn skipped_types_are_capped() {
    let mut c = Counts::default();
    for i in 0..MAX_SKIPPED_TYPES + 5 {
        c.skip(&format!("t{i}"));
    }
    assert_eq!(c.skipped.len(), MAX_SKIPPED_TYPES + 1);
    assert_eq!(c.skipped["(other)"], 5);
    assert_eq!(c.skipped_total(), (MAX_SKIPPED_TYPES + 5) as u64);
}

fn input(path: &str, bytes: u64, lines: u64) -> InputReport {
    InputReport {
        path: path.into(),
        bytes,
        decompressed_bytes: bytes,
        compression: "none",
        lines,
        events: lines,
    }
}

#[test]
fn inputs_are_named_or_counted_with_their_folder() {
    assert_eq!(
        describe_inputs(&[input("-", 10, 1)]),
        "standard input (10 B, 1 lines)"
    );
    assert_eq!(
        describe_inputs(&[input("a/x.gz", 1500, 3), input("b.json", 0, 0)]),
        "a/x.gz, b.json (1.5 kB, 3 lines)"
    );
    let many: Vec<InputReport> = (0..4)
        .map(|i| {
            input(
                &format!("logs/src/{}/f{i}.gz", 1000 + i % 2),
                2_000_000,
                1000,
            )
        })
        .collect();
    assert_eq!(
        describe_inputs(&many),
        "4 files under logs/src/ (8.0 MB, 4,000 lines)"
    );
    let apart: Vec<InputReport> = ["a/1", "b/2", "c/3", "d/4"]
        .iter()
        .map(|p| input(p, 1, 1))
        .collect();
    assert_eq!(describe_inputs(&apart), "4 files (4 B, 4 lines)");
}

/// Drives the progress display on an in-memory terminal (no real one needed): the bar while reading,
/// with bytes of a known total, rows and rejects; a spinner with bytes and rows when the total is unknown;
/// and the phase after reading.
#[test]
fn progress_shows_bytes_rows_rejects_and_the_phase() {
    use indicatif::{InMemoryTerm, ProgressDrawTarget};
    let term = InMemoryTerm::new(4, 120);
    let p = Progress::on(
        ProgressDrawTarget::term_like(Box::new(term.clone())),
        Some(8 << 20),
    );
    p.read(2 << 20, 12_345, 7);
    p.draw();
    let shown = term.contents();
    assert!(shown.contains("reading: 2.10 MB/8.39 MB"), "{shown}");
    assert!(shown.contains("12,345 rows, 7 rejected"), "{shown}");
    assert!(shown.contains('['), "a bar: {shown}");
    p.phase(Phase::Writing, 20_000, 9);
    p.draw();
    let shown = term.contents();
    assert!(
        shown.contains("writing files: 20,000 rows, 9 rejected (input 2.1 MB read in 0."),
        "{shown}"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    p.phase(Phase::Publishing, 20_000, 9);
    p.draw();
    // The reading time stays as it was when reading ended (it does not count the phases after it).
    assert!(
        term.contents()
            .contains("publishing: 20,000 rows, 9 rejected (input 2.1 MB read in 0."),
        "{}",
        term.contents()
    );
    p.finish();

    // Standard input: no total, so no bar, no total and no eta; the bytes read and the rows so far.
    let term = InMemoryTerm::new(4, 120);
    let p = Progress::on(ProgressDrawTarget::term_like(Box::new(term.clone())), None);
    p.read(3 << 20, 500, 0);
    p.draw();
    let shown = term.contents();
    assert!(shown.contains("reading: 3.15 MB ("), "{shown}");
    assert!(shown.contains("500 rows, 0 rejected"), "{shown}");
    // "B/" only as in a rate ("MB/s"), never as in "read/total".
    let no_total = shown
        .match_indices("B/")
        .all(|(i, _)| shown[i + 2..].starts_with('s'));
    assert!(
        !shown.contains('[') && !shown.contains("eta") && no_total,
        "{shown}"
    );
    p.finish();
}

#[test]
fn thousands_separator() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1234567), "1,234,567");
}
