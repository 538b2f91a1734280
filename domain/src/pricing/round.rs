//! The one rounding rule of pricing: half to even on every division, and shares of an
//! order-level amount split over lines by largest remainder so the lines sum to it exactly.

/// `numerator / denominator` rounded half to even (banker's rounding); `denominator > 0`.
pub fn div_half_even(numerator: i128, denominator: i128) -> i128 {
    debug_assert!(denominator > 0);
    let quotient = numerator.div_euclid(denominator);
    let remainder = numerator.rem_euclid(denominator);
    match (2 * remainder).cmp(&denominator) {
        std::cmp::Ordering::Less => quotient,
        std::cmp::Ordering::Greater => quotient + 1,
        std::cmp::Ordering::Equal if quotient % 2 == 0 => quotient,
        std::cmp::Ordering::Equal => quotient + 1,
    }
}

/// `amount × bps / 10,000`, half to even.
pub fn bps_of(amount: i64, bps: u32) -> i64 {
    clamp(div_half_even(i128::from(amount) * i128::from(bps), 10_000))
}

/// Splits `total` (≥ 0) over `weights` (each ≥ 0) in proportion: each share is rounded down,
/// and the minor units left over go one each to the largest remainders, ties to the lower
/// `tie_rank` (a rank that does not depend on the order of the lines). Shares sum to `total`
/// exactly; with all weights zero, everything goes to the first by rank. A share never
/// exceeds its weight when `total` ≤ the sum of the weights.
pub fn allocate(total: i64, weights: &[i64], tie_rank: &[usize]) -> Vec<i64> {
    let sum: i128 = weights.iter().map(|w| i128::from(*w)).sum();
    let mut shares = vec![0i64; weights.len()];
    if weights.is_empty() || total == 0 {
        return shares;
    }
    if sum == 0 {
        if let Some(first) = (0..weights.len()).min_by_key(|i| tie_rank[*i]) {
            shares[first] = total;
        }
        return shares;
    }
    let mut remainders = Vec::with_capacity(weights.len());
    let mut given: i64 = 0;
    for (i, weight) in weights.iter().enumerate() {
        let product = i128::from(total) * i128::from(*weight);
        shares[i] = clamp(product / sum);
        given += shares[i];
        remainders.push((product % sum, i));
    }
    // Largest remainder first; equal remainders by rank.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(tie_rank[a.1].cmp(&tie_rank[b.1])));
    let mut left = total - given;
    for (_, i) in remainders.iter().cycle() {
        if left <= 0 {
            break;
        }
        shares[*i] += 1;
        left -= 1;
    }
    shares
}

fn clamp(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_go_to_even() {
        assert_eq!(div_half_even(25, 10), 2);
        assert_eq!(div_half_even(35, 10), 4);
        assert_eq!(div_half_even(26, 10), 3);
        assert_eq!(div_half_even(24, 10), 2);
        assert_eq!(div_half_even(-25, 10), -2);
        assert_eq!(bps_of(2999, 1000), 300); // 299.9
        assert_eq!(bps_of(50, 1000), 5);
        assert_eq!(bps_of(25, 1000), 2); // 2.5 → 2
        assert_eq!(bps_of(35, 1000), 4); // 3.5 → 4
    }

    #[test]
    fn shares_sum_exactly_and_ties_follow_rank() {
        assert_eq!(allocate(100, &[1, 1, 1], &[0, 1, 2]), vec![34, 33, 33]);
        assert_eq!(allocate(100, &[1, 1, 1], &[2, 1, 0]), vec![33, 33, 34]);
        assert_eq!(allocate(10, &[0, 0], &[1, 0]), vec![0, 10]);
        assert_eq!(allocate(7, &[3000, 1000], &[0, 1]), vec![5, 2]); // 5.25, 1.75
        assert_eq!(allocate(0, &[5], &[0]), vec![0]);
    }
}
