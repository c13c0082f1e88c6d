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
