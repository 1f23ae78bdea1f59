//! Shrinks a failing input: drops chunks of it, halving the chunk size, while the failure stays
//! (a simple ddmin). Used on a batch's objects and then on the resources Envoy was handed.

/// The smallest sub-list of `items` (in order) for which `fails` still holds, by removal of
/// chunks; `fails(items)` is assumed true. `budget` bounds the calls to `fails`.
pub fn minimize<T: Clone>(
    items: Vec<T>,
    mut budget: usize,
    mut fails: impl FnMut(&[T]) -> bool,
) -> Vec<T> {
    let mut items = items;
    let mut chunk = items.len().div_ceil(2).max(1);
    loop {
        let mut start = 0;
        let mut removed_any = false;
        while start < items.len() {
            let end = (start + chunk).min(items.len());
            let candidate: Vec<T> = items[..start]
                .iter()
                .chain(&items[end..])
                .cloned()
                .collect();
            // Only calls of `fails` spend the budget: an empty candidate is never tried.
            let tried = !candidate.is_empty() && {
                if budget == 0 {
                    return items;
                }
                budget -= 1;
                true
            };
            if tried && fails(&candidate) {
                items = candidate;
                removed_any = true;
            } else {
                start = end;
            }
        }
        if chunk == 1 && !removed_any {
            return items;
        }
        if !removed_any {
            chunk = chunk.div_ceil(2).max(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimizing_keeps_exactly_what_the_failure_needs() {
        let items: Vec<u32> = (0..40).collect();
        let minimal = minimize(items, 1000, |s| s.contains(&7) && s.contains(&31));
        assert_eq!(minimal, [7, 31]);
    }

    #[test]
    fn minimizing_stops_when_the_budget_is_spent() {
        let items: Vec<u32> = (0..40).collect();
        let mut calls = 0;
        let minimal = minimize(items, 5, |s| {
            calls += 1;
            s.contains(&7)
        });
        assert_eq!(calls, 5);
        assert!(minimal.contains(&7));
    }
}
