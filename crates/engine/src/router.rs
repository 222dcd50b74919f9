//! Routing: which routes select an event (source, type glob, CEL filter), and the deliveries
//! that follow from it.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use estafeta_config::model::Ordering;
use estafeta_config::{Config, RouteSettings};
use estafeta_core::expr::Filter;
use estafeta_core::matcher::TypeMatcher;
use estafeta_core::template::TemplateSet;
use estafeta_core::{Delivery, DeliveryId, DeliveryStatus, Event};
use estafeta_destinations::HttpClients;

use crate::steps::{RouteSteps, StepBuildError};

/// One route, compiled.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) id: String,
    from: Vec<String>,
    types: TypeMatcher,
    filter: Option<Filter>,
    pub(crate) ordering: Ordering,
    /// The steps run for each delivery before rendering.
    pub(crate) steps: Option<RouteSteps>,
    pub(crate) targets: Vec<Target>,
}

/// One destination of a route.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) destination: String,
    pub(crate) template: Option<String>,
    pub(crate) content_type: Option<String>,
}

/// What routing decided for one route and one event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Not selected by source or type.
    Skip,
    /// Selected by source and type but the filter said no.
    Filtered,
    /// Selected.
    Selected,
    /// The filter failed at run time (the reason).
    Failed(String),
}

/// The compiled routing table.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
    by_id: HashMap<String, usize>,
    pub(crate) templates: Arc<TemplateSet>,
}

impl Router {
    /// Compiles the routes of a validated config; `enrich` steps get their HTTP clients from
    /// `clients`.
    ///
    /// # Errors
    /// An `enrich` step whose client or headers cannot be built.
    pub fn new(config: &Config, clients: &HttpClients) -> Result<Self, StepBuildError> {
        Self::from_parts(&config.routes, Arc::clone(&config.templates), clients)
    }

    pub(crate) fn from_parts(
        routes: &[RouteSettings],
        templates: Arc<TemplateSet>,
        clients: &HttpClients,
    ) -> Result<Self, StepBuildError> {
        let mut compiled = Vec::with_capacity(routes.len());
        for r in routes {
            compiled.push(Route {
                id: r.id.clone(),
                from: r.from.clone(),
                types: TypeMatcher::new(&r.match_types),
                filter: r.filter.clone(),
                ordering: r.ordering,
                steps: RouteSteps::build(&r.id, &r.steps, clients)?,
                targets: r
                    .targets
                    .iter()
                    .map(|t| Target {
                        destination: t.destination.clone(),
                        template: t.template.clone(),
                        content_type: t.content_type.clone(),
                    })
                    .collect(),
            });
        }
        let routes = compiled;
        let by_id = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
        Ok(Self {
            routes,
            by_id,
            templates,
        })
    }

    /// Extra attempts a destination may run at once for the route steps' look-ups, beyond
    /// its own concurrency (which bounds only the sends).
    pub(crate) fn step_slots(&self, destination: &str) -> usize {
        self.routes
            .iter()
            .filter(|r| r.targets.iter().any(|t| t.destination == destination))
            .filter_map(|r| r.steps.as_ref())
            .map(|s| s.concurrency().max(64))
            .max()
            .unwrap_or(0)
    }

    pub(crate) fn route(&self, id: &str) -> Option<&Route> {
        self.by_id.get(id).map(|&i| &self.routes[i])
    }

    /// Route ids, in configuration order.
    pub fn route_ids(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.id.as_str())
    }

    /// The deliveries an event gets from every route.
    pub(crate) fn plan(&self, event: &Event) -> Vec<Delivery> {
        let mut out = Vec::new();
        for route in &self.routes {
            self.plan_route(route, event, &mut out);
        }
        out
    }

    /// The deliveries an event gets from one route.
    pub(crate) fn plan_route(&self, route: &Route, event: &Event, out: &mut Vec<Delivery>) {
        let (status, error) = match decide(route, event) {
            Decision::Skip | Decision::Filtered => return,
            Decision::Selected => (DeliveryStatus::Pending, None),
            Decision::Failed(reason) => (DeliveryStatus::Dead, Some(reason)),
        };
        let now = Utc::now();
        for (i, t) in route.targets.iter().enumerate() {
            out.push(Delivery {
                id: DeliveryId::new(),
                event_id: event.id,
                tenant: event.tenant.clone(),
                route_id: route.id.clone(),
                destination_id: t.destination.clone(),
                target_index: u32::try_from(i).unwrap_or(u32::MAX),
                status,
                attempts: 0,
                next_at: (status == DeliveryStatus::Pending).then_some(now),
                last_error: error.clone(),
                key: (route.ordering == Ordering::Key)
                    .then(|| event.key.clone())
                    .flatten(),
                created_at: now,
                updated_at: now,
            });
        }
    }
}

pub(crate) fn decide(route: &Route, event: &Event) -> Decision {
    if !route.from.is_empty() && !route.from.contains(&event.source_id) {
        return Decision::Skip;
    }
    if !route.types.matches(&event.ty) {
        return Decision::Skip;
    }
    match &route.filter {
        None => Decision::Selected,
        Some(f) => match f.matches(event, &[]) {
            Ok(true) => Decision::Selected,
            Ok(false) => Decision::Filtered,
            Err(e) => Decision::Failed(format!("route `{}`: {e}", route.id)),
        },
    }
}
