//! The seeded product catalogue: categories, prices and a Zipf-like popularity, so a
//! few products get most of the traffic, as in a real shop.

use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Product categories with their price range in cents (lowest, highest).
pub const CATEGORIES: [(&str, i64, i64); 12] = [
    ("electronics", 1_999, 249_999),
    ("books", 499, 5_999),
    ("home_garden", 799, 89_999),
    ("fashion", 999, 29_999),
    ("toys", 599, 14_999),
    ("sports", 899, 79_999),
    ("beauty", 399, 12_999),
    ("grocery", 99, 4_999),
    ("automotive", 1_499, 149_999),
    ("music", 699, 39_999),
    ("office", 199, 19_999),
    ("pets", 299, 9_999),
];

/// Number of products in the catalogue.
pub const PRODUCT_COUNT: usize = 5_000;

/// Zipf exponent of product popularity: the most popular product gets about
/// 1/H(n, s) of all views, the 100th about a hundredth of that.
const ZIPF_EXPONENT: f64 = 1.07;

/// Sampling resolution: the cumulative weights are scaled to 2^53.
const CDF_SCALE: f64 = (1u64 << 53) as f64;

/// One product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Product {
    /// `product_id` in the CSV (1-based, stable for a seed).
    pub id: i64,
    /// Index into [`CATEGORIES`].
    pub category: u8,
    pub price_cents: i64,
}

impl Product {
    pub fn category_name(&self) -> &'static str {
        CATEGORIES[usize::from(self.category)].0
    }
}

/// Products plus the cumulative popularity used to draw them.
#[derive(Debug, Clone)]
pub struct Catalogue {
    products: Vec<Product>,
    /// `cdf[i]` = scaled sum of the weights of products `0..=i`, in [0, 2^53].
    cdf: Vec<u64>,
}

impl Catalogue {
    /// Builds the catalogue for `seed`. It depends on the seed only, so the same products
    /// (ids, categories, prices) appear whatever the start time or rates.
    pub fn new(seed: u64) -> Catalogue {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_ca7a_1060_e000);
        let mut products: Vec<Product> = (0..PRODUCT_COUNT)
            .map(|i| {
                let category = rng.random_range(0..CATEGORIES.len());
                let (_, lo, hi) = CATEGORIES[category];
                // Log-uniform between lo and hi: cheap items are more common.
                let (llo, lhi) = ((lo as f64).ln(), (hi as f64).ln());
                let raw = rng.random_range(llo..=lhi).exp() as i64;
                // Shop prices end in .99 or .49 mostly.
                let ending = if rng.next_u32() % 4 == 0 { 49 } else { 99 };
                let price_cents = ((raw / 100) * 100 + ending).clamp(lo, hi);
                Product {
                    id: i as i64 + 1,
                    category: category as u8,
                    price_cents,
                }
            })
            .collect();
        // Popularity rank is independent of id and category.
        products.shuffle(&mut rng);
        let weights: Vec<f64> = (1..=products.len())
            .map(|rank| 1.0 / (rank as f64).powf(ZIPF_EXPONENT))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cdf: Vec<u64> = weights
            .iter()
            .map(|w| {
                acc += w;
                (acc / total * CDF_SCALE) as u64
            })
            .collect();
        if let Some(last) = cdf.last_mut() {
            *last = 1u64 << 53;
        }
        Catalogue { products, cdf }
    }

    /// Draws a product by popularity.
    pub fn sample(&self, rng: &mut impl RngCore) -> &Product {
        let u = rng.next_u64() >> 11; // uniform in [0, 2^53)
        let i = self.cdf.partition_point(|&c| c <= u);
        &self.products[i.min(self.products.len() - 1)]
    }

    /// Products in popularity order (most popular first).
    pub fn products(&self) -> &[Product] {
        &self.products
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_catalogue() {
        assert_eq!(Catalogue::new(3).products(), Catalogue::new(3).products());
        assert_ne!(Catalogue::new(3).products(), Catalogue::new(4).products());
    }

    #[test]
    fn prices_within_category_ranges() {
        let c = Catalogue::new(1);
        assert_eq!(c.products().len(), PRODUCT_COUNT);
        for p in c.products() {
            let (_, lo, hi) = CATEGORIES[usize::from(p.category)];
            assert!(
                (lo..=hi).contains(&p.price_cents),
                "{p:?} outside {lo}..={hi}"
            );
        }
    }

    #[test]
    fn popularity_is_skewed() {
        let c = Catalogue::new(1);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let top = c.products()[0].id;
        let tail = c.products()[PRODUCT_COUNT - 1].id;
        let (mut top_n, mut tail_n) = (0u32, 0u32);
        for _ in 0..200_000 {
            let id = c.sample(&mut rng).id;
            top_n += u32::from(id == top);
            tail_n += u32::from(id == tail);
        }
        // The top product gets ~10% of the draws; the last one almost none.
        assert!(top_n > 10_000, "top product drawn {top_n} times");
        assert!(tail_n < top_n / 100, "tail {tail_n} vs top {top_n}");
    }
}
