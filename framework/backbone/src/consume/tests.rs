//! Tests of the consumer's parts that need no broker.

use super::partition::Cursor;

#[test]
fn a_cursor_skips_what_was_handled_and_follows_a_rewind() {
    let cursor = Cursor::new();
    assert!(cursor.admits(0), "a fresh cursor takes any offset");
    assert!(cursor.admits(41));
    cursor.advance(41);
    assert!(!cursor.admits(41), "an event handed out again is skipped");
    assert!(!cursor.admits(7));
    assert!(cursor.admits(42));
    // Offsets may jump (transaction markers, aborted records): later ones are taken.
    assert!(cursor.admits(45));
    cursor.advance(45);

    let before = cursor.rewinds();
    cursor.rewind(40);
    assert_ne!(cursor.rewinds(), before, "a rewind is seen by a task that took an event before it");
    assert!(cursor.admits(40), "after a rewind the rewound events are taken again");
    assert!(!cursor.admits(39));
    assert_eq!(cursor.resume_at(), rdkafka::Offset::Offset(40));
}
