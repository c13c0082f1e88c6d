use super::collapse;

#[test]
fn identical_inputs_collapse_to_one_in_first_seen_order() {
    let inputs = ["a", "b", "a", "c", "b", "a"].map(String::from).to_vec();
    let (unique, slot_of) = collapse(inputs);
    assert_eq!(unique, ["a", "b", "c"]);
    assert_eq!(slot_of, [0, 1, 0, 2, 1, 0]);
    let (unique, slot_of) = collapse(vec!["x".into()]);
    assert_eq!((unique.len(), slot_of), (1, vec![0]));
}

/// Inputs of one length and the same ends, different in the middle, are all kept; equal ones
/// among them still collapse (the cheap sketch of each input only proves inputs distinct).
#[test]
fn inputs_alike_at_both_ends_are_compared_whole() {
    let ends = "e".repeat(40);
    let input = |middle: &str| format!("{ends}{middle}{ends}");
    let inputs = vec![input("a"), input("b"), input("a"), input("c")];
    let (unique, slot_of) = collapse(inputs);
    assert_eq!(unique, [input("a"), input("b"), input("c")]);
    assert_eq!(slot_of, [0, 1, 0, 2]);
    // Short inputs are their own sketch.
    let (unique, slot_of) = collapse(["ab", "a", "b", "ab", ""].map(String::from).to_vec());
    assert_eq!(unique, ["ab", "a", "b", ""]);
    assert_eq!(slot_of, [0, 1, 2, 0, 3]);
    // Distinct inputs of one length, told apart by their sketches alone.
    let distinct: Vec<String> = (0..8).map(|i| format!("{i}{ends}")).collect();
    let (unique, slot_of) = collapse(distinct.clone());
    assert_eq!(unique, distinct);
    assert_eq!(slot_of, (0..8).collect::<Vec<_>>());
}
