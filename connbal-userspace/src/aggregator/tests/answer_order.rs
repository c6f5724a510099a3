//! Answer position: whether the client takes the address listed first,
//! and whether the server rotates (docs/semantics.md section 8).

use super::*;
use verdict::{Check, Finding};

/// A round-robin server rotates its answers; the client connects to the
/// first address each time: said, and fine, since the spread follows the
/// rotation (curl does this).
/// Checks docs/semantics.md section 8.
#[test]
fn a_client_taking_the_first_of_rotated_answers_spreads_as_they_rotate() {
    let mut h = Harness::new();
    let orders: [[u8; 4]; 4] = [[1, 2, 3, 4], [2, 3, 4, 1], [3, 4, 1, 2], [4, 1, 2, 3]];
    for i in 0..12u16 {
        let order = orders[usize::from(i % 4)];
        h.lookup(i, "web.example", 30, &order);
        h.syn(&format!("10.0.0.{}", order[0]), 80);
    }
    let s = h.service("web.example");
    let order = check_of(&s, Check::AnswerOrder);
    assert_eq!(order.finding, Finding::TakesFirstRotated, "{}", order.text);
    assert!(order.ok);
    assert!(
        order.text.contains("12 of 12 connections"),
        "{}",
        order.text
    );
    assert!(
        order.text.contains("so the spread follows its rotation"),
        "{}",
        order.text
    );
    // Spread evenly all the same: balance alone could not tell.
    assert!(check_of(&s, Check::Balance).ok);
    assert!(
        s.rows.iter().all(|r| r.first_in_answers == 3),
        "{:?}",
        s.rows
    );
}

/// The server lists the same address first every time and the client
/// takes it: both are the cause.
/// Checks docs/semantics.md section 8.
#[test]
fn a_server_that_never_rotates_and_a_client_taking_the_first_are_both_the_cause() {
    let mut h = Harness::new();
    for i in 0..10u16 {
        h.lookup(i, "web.example", 30, &[1, 2, 3, 4]);
        h.syn("10.0.0.1", 80);
    }
    let s = h.service("web.example");
    let order = check_of(&s, Check::AnswerOrder);
    assert_eq!(order.finding, Finding::TakesFirst);
    assert!(!order.ok);
    assert!(
        order
            .text
            .contains("lists 10.0.0.1 first in every answer, so both are the cause"),
        "{}",
        order.text
    );
}

/// A client that chooses at random among a fixed order is fine.
/// Checks docs/semantics.md section 8.
#[test]
fn a_client_choosing_among_a_fixed_order_is_fine() {
    let mut h = Harness::new();
    for i in 0..12u16 {
        h.lookup(i, "web.example", 30, &[1, 2, 3, 4]);
        h.syn(&format!("10.0.0.{}", 1 + (i * 3) % 4), 80);
    }
    let s = h.service("web.example");
    let order = check_of(&s, Check::AnswerOrder);
    assert_eq!(order.finding, Finding::FirstNotPreferred, "{}", order.text);
    assert!(order.ok);
}
