//! Users browsing in sessions: each session views a few products, then with
//! `view_to_cart_rate` adds the last one to the cart, and with `cart_to_purchase_rate`
//! buys it. Many sessions are open at once and their events interleave.

use rand::{Rng, RngCore};
use sluice_core::EventType;

use crate::catalogue::{Catalogue, Product};

/// Number of distinct users sessions are drawn from.
pub const USER_COUNT: u64 = 200_000;

/// Mean number of product views per session.
const MEAN_VIEWS: f64 = 4.0;
/// Longest browsing phase of one session.
const MAX_VIEWS: u32 = 40;

/// One generated event, before formatting. Plain data: no allocation per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub event_id: [u8; 16],
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub user_id: i64,
    /// Written as 16 lower-case hex digits.
    pub session_id: u64,
    pub event_type: EventType,
    pub product: Product,
    pub quantity: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Browsing { views_left: u32 },
    Cart,
    Purchase,
}

#[derive(Debug, Clone, Copy)]
struct Session {
    user_id: i64,
    session_id: u64,
    stage: Stage,
    /// The product last viewed (and then carted and bought).
    product: Product,
    quantity: i32,
}

/// The simulated shop traffic.
#[derive(Debug, Clone)]
pub struct Traffic {
    catalogue: Catalogue,
    sessions: Vec<Session>,
    view_to_cart: f64,
    cart_to_purchase: f64,
}

impl Traffic {
    /// `concurrent` sessions are open at any time; a finished session is replaced at once.
    pub fn new(
        catalogue: Catalogue,
        concurrent: usize,
        view_to_cart: f64,
        cart_to_purchase: f64,
        rng: &mut impl RngCore,
    ) -> Traffic {
        let first = catalogue.products()[0];
        let mut sessions = Vec::with_capacity(concurrent.max(1));
        for _ in 0..concurrent.max(1) {
            sessions.push(new_session(rng, first));
        }
        let mut traffic = Traffic {
            catalogue,
            sessions,
            view_to_cart,
            cart_to_purchase,
        };
        // Warm up: play a few events per session and discard them, so the output
        // starts with sessions at all stages rather than with a burst of first views.
        let warm_up = traffic.sessions.len() * (MEAN_VIEWS as usize + 2);
        for _ in 0..warm_up {
            traffic.next_row(rng, 0);
        }
        traffic
    }

    /// The next event of a randomly chosen open session, at `time_ms`.
    pub fn next_row(&mut self, rng: &mut impl RngCore, time_ms: i64) -> Row {
        let idx = rng.random_range(0..self.sessions.len());
        let s = &mut self.sessions[idx];
        match s.stage {
            Stage::Browsing { views_left } => {
                s.product = *self.catalogue.sample(rng);
                s.quantity = 0;
                let row = make_row(rng, s, EventType::View, time_ms);
                if views_left > 1 {
                    s.stage = Stage::Browsing {
                        views_left: views_left - 1,
                    };
                } else if rng.random_bool(self.view_to_cart) {
                    s.stage = Stage::Cart;
                } else {
                    *s = new_session(rng, s.product);
                }
                row
            }
            Stage::Cart => {
                s.quantity = cart_quantity(rng);
                let row = make_row(rng, s, EventType::AddToCart, time_ms);
                if rng.random_bool(self.cart_to_purchase) {
                    s.stage = Stage::Purchase;
                } else {
                    *s = new_session(rng, s.product);
                }
                row
            }
            Stage::Purchase => {
                let row = make_row(rng, s, EventType::Purchase, time_ms);
                *s = new_session(rng, s.product);
                row
            }
        }
    }
}

fn make_row(rng: &mut impl RngCore, s: &Session, event_type: EventType, time_ms: i64) -> Row {
    let mut event_id = [0u8; 16];
    rng.fill_bytes(&mut event_id);
    Row {
        event_id,
        time_ms,
        user_id: s.user_id,
        session_id: s.session_id,
        event_type,
        product: s.product,
        quantity: s.quantity,
    }
}

fn new_session(rng: &mut impl RngCore, product: Product) -> Session {
    // Geometric number of views with mean MEAN_VIEWS, at least 1.
    let p = 1.0 / MEAN_VIEWS;
    let mut views = 1;
    while views < MAX_VIEWS && !rng.random_bool(p) {
        views += 1;
    }
    // Returning users are more common than one-off visitors: square a uniform draw.
    let u: f64 = rng.random();
    let user_id = 1 + ((u * u) * USER_COUNT as f64) as i64;
    Session {
        user_id,
        session_id: rng.next_u64(),
        stage: Stage::Browsing { views_left: views },
        product,
        quantity: 0,
    }
}

/// Mostly one item, sometimes a few.
fn cart_quantity(rng: &mut impl RngCore) -> i32 {
    match rng.next_u32() % 100 {
        0..70 => 1,
        70..90 => 2,
        90..97 => 3,
        _ => 4 + (rng.next_u32() % 6) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::collections::HashMap;

    fn counts(view_to_cart: f64, cart_to_purchase: f64, n: usize) -> HashMap<EventType, u64> {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut t = Traffic::new(
            Catalogue::new(1),
            100,
            view_to_cart,
            cart_to_purchase,
            &mut rng,
        );
        let mut out = HashMap::new();
        for i in 0..n {
            let row = t.next_row(&mut rng, i as i64);
            assert!(row.quantity >= row.event_type.min_quantity());
            *out.entry(row.event_type).or_default() += 1;
        }
        out
    }

    #[test]
    fn funnel_rates_are_respected() {
        let c = counts(0.3, 0.5, 200_000);
        let (v, a, p) = (
            c[&EventType::View] as f64,
            c[&EventType::AddToCart] as f64,
            c[&EventType::Purchase] as f64,
        );
        assert!(p <= a && a <= v);
        // Sessions ≈ views / MEAN_VIEWS; carts ≈ 0.3 of sessions; purchases ≈ half the carts.
        let sessions = v / MEAN_VIEWS;
        assert!(
            (a / sessions - 0.3).abs() < 0.03,
            "carts/session {}",
            a / sessions
        );
        assert!((p / a - 0.5).abs() < 0.03, "purchase/cart {}", p / a);
    }

    #[test]
    fn zero_rates_give_views_only() {
        let c = counts(0.0, 1.0, 10_000);
        assert_eq!(c.len(), 1);
        let c = counts(1.0, 0.0, 10_000);
        assert!(!c.contains_key(&EventType::Purchase));
    }

    #[test]
    fn purchase_follows_cart_of_same_session_and_product() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut t = Traffic::new(Catalogue::new(1), 10, 1.0, 1.0, &mut rng);
        let mut carts = HashMap::new();
        let mut carted_in_warm_up = 0;
        for i in 0..10_000 {
            let r = t.next_row(&mut rng, i);
            match r.event_type {
                EventType::AddToCart => {
                    carts.insert(r.session_id, (r.product.id, r.quantity));
                }
                EventType::Purchase => match carts.get(&r.session_id) {
                    Some(cart) => assert_eq!(cart, &(r.product.id, r.quantity)),
                    None => carted_in_warm_up += 1,
                },
                EventType::View => {}
            }
        }
        // Only sessions open at the start may have carted during the warm-up.
        assert!(carted_in_warm_up <= 10, "{carted_in_warm_up}");
    }
}
