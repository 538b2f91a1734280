use super::*;

fn state_with_segments(ids: &[u32]) -> (tempfile::TempDir, State) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = State::new(1 << 20);
    for id in ids {
        let file = File::create(dir.path().join(format::segment_name(*id))).expect("file");
        state.segments.insert(*id, Segment::new(Arc::new(file), 0));
    }
    state.add_topic("t", 1);
    (dir, state)
}

fn at(segment: u32, pos: u32) -> Loc {
    Loc { segment, pos }
}

#[test]
fn runs_follow_appends_moves_and_trims() {
    let (_dir, mut state) = state_with_segments(&[1, 2, 3, 5]);
    for (offset, (segment, pos)) in [(1, 10), (1, 20), (2, 10), (2, 20), (3, 10)]
        .into_iter()
        .enumerate()
    {
        state.place(0, offset as u64, at(segment, pos), None);
    }
    let part = &state.parts[0];
    assert_eq!(part.loc(1), Some(at(1, 20)));
    assert_eq!(part.loc(3), Some(at(2, 20)));
    assert_eq!(part.runs_in(2), vec![2..4]);
    assert_eq!(state.segments[&1].live, 2);

    // Moving offset 2 forward splits the run of segment 2.
    state.place(0, 2, at(5, 99), None);
    let part = &state.parts[0];
    assert_eq!(part.loc(2), Some(at(5, 99)));
    assert_eq!(part.loc(3), Some(at(2, 20)), "the rest of the run stays");
    assert_eq!(part.runs_in(2), vec![3..4]);
    assert_eq!(part.runs_in(5), vec![2..3]);
    assert_eq!((state.segments[&2].live, state.segments[&5].live), (1, 1));
    assert_eq!(
        state.segments[&2].records, 2,
        "records ever written stay counted"
    );

    // A gap: offset 7 lands after two missing ones.
    state.place(0, 7, at(3, 30), None);
    assert_eq!(state.parts[0].loc(5), None);
    assert_eq!(state.parts[0].loc(7), Some(at(3, 30)));

    // Trimming below 3 forgets offsets 0..3 and what they held.
    assert_eq!(state.trim(0, 3), 3);
    let part = &state.parts[0];
    assert_eq!((part.base, part.end()), (3, 8));
    assert_eq!(part.loc(2), None);
    assert_eq!(part.loc(3), Some(at(2, 20)));
    assert_eq!(part.runs_in(1), Vec::<std::ops::Range<u64>>::new());
    assert_eq!(
        (
            state.segments[&1].live,
            state.segments[&5].live,
            state.segments[&2].live
        ),
        (0, 0, 1)
    );
    // Trimming everything leaves an empty partition that still ends at 8.
    assert_eq!(state.trim(0, 100), 3, "3, 4 and 7; 5 and 6 were gaps");
    assert_eq!((state.parts[0].base, state.parts[0].end()), (8, 8));
    assert!(state.segments.values().all(|s| s.live == 0));
}
