//! A workflow's dependency graph: built from task specs, refusing unknown dependencies,
//! duplicates and cycles (the error lists the cycle), growing while the workflow runs
//! (decomposition), and tracking readiness so that completing a task costs time proportional
//! to its out-degree, not to the size of the graph.
//!
//! Nodes are dense `u32` indices; keys are only looked up at the edges of the API.

use std::collections::HashMap;
use std::fmt;

use crate::ids::TaskKey;
use crate::spec::TaskSpec;

/// Most tasks one workflow may hold.
pub const TASKS_PER_WORKFLOW_MAX: usize = 100_000;

/// Where a node stands, as far as the graph is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    /// Some dependency has not completed.
    Waiting,
    /// Every dependency completed; the task may run.
    Ready,
    Completed,
    /// Ended failed or cancelled, itself or because of an upstream task.
    Failed,
}

/// Why a graph or an extension of it was refused. Nothing changes on refusal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    #[error("task `{0}` is defined twice")]
    DuplicateTask(TaskKey),
    #[error("task `{task}` depends on `{dependency}`, which is not a task of the workflow")]
    UnknownDependency { task: TaskKey, dependency: TaskKey },
    #[error("task `{task}` lists dependency `{dependency}` twice")]
    DuplicateDependency { task: TaskKey, dependency: TaskKey },
    #[error("the dependencies form a cycle: {}", CyclePath(.0))]
    Cycle(Vec<TaskKey>),
    #[error("task `{0}` is not in the workflow")]
    UnknownTask(TaskKey),
    #[error("task `{task}` is {status:?}; it can no longer wait for new dependencies")]
    TooLateToDepend { task: TaskKey, status: NodeStatus },
    #[error("task `{task}` is {status:?}, not ready, so it cannot complete")]
    NotReady { task: TaskKey, status: NodeStatus },
    #[error("a workflow holds at most {TASKS_PER_WORKFLOW_MAX} tasks")]
    TooManyTasks,
    #[error("task `{0}` completed; it can no longer fail")]
    AlreadyCompleted(TaskKey),
}

struct CyclePath<'a>(&'a [TaskKey]);

impl fmt::Display for CyclePath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, key) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" -> ")?;
            }
            write!(f, "{key}")?;
        }
        f.write_str(" (each depends on the next)")
    }
}

/// A validated, acyclic dependency graph with readiness tracking.
#[derive(Clone, Debug, Default)]
pub struct Dag {
    keys: Vec<TaskKey>,
    index: HashMap<TaskKey, u32>,
    /// `deps[n]`: the nodes `n` depends on.
    deps: Vec<Vec<u32>>,
    /// `dependents[n]`: the nodes that depend on `n`.
    dependents: Vec<Vec<u32>>,
    /// Dependencies of each node not yet completed.
    open: Vec<u32>,
    status: Vec<NodeStatus>,
}

impl Dag {
    /// Builds the graph of a workflow from `(key, dependencies)` pairs.
    pub fn build<'a, I>(tasks: I) -> Result<Dag, DagError>
    where
        I: IntoIterator<Item = (&'a TaskKey, &'a [TaskKey])>,
    {
        let mut dag = Dag::default();
        let failed = dag.extend(tasks, std::iter::empty())?;
        debug_assert!(failed.is_empty(), "a new graph has no failed tasks");
        Ok(dag)
    }

    pub fn from_specs(specs: &[TaskSpec]) -> Result<Dag, DagError> {
        Dag::build(specs.iter().map(|s| (&s.key, s.depends_on.as_slice())))
    }

    /// Adds tasks (which may depend on existing and new tasks) and new dependencies of existing
    /// tasks (`(dependent, dependency)`): how an executing task decomposes into sub-tasks that
    /// its dependents must also wait for. All or nothing. Returns the tasks, new or existing,
    /// that the extension made depend on a failed task: they are failed now, and must be
    /// cancelled as `upstream_failed`.
    pub fn extend<'a, I, E>(&mut self, tasks: I, edges: E) -> Result<Vec<TaskKey>, DagError>
    where
        I: IntoIterator<Item = (&'a TaskKey, &'a [TaskKey])>,
        E: IntoIterator<Item = (&'a TaskKey, &'a TaskKey)>,
    {
        let mark = Mark {
            nodes: self.keys.len(),
            edges: Vec::new(),
        };
        let mut mark = mark;
        let result = self.try_extend(tasks, edges, &mut mark);
        if result.is_err() {
            self.rollback(mark);
        }
        result
    }

    fn try_extend<'a, I, E>(
        &mut self,
        tasks: I,
        edges: E,
        mark: &mut Mark,
    ) -> Result<Vec<TaskKey>, DagError>
    where
        I: IntoIterator<Item = (&'a TaskKey, &'a [TaskKey])>,
        E: IntoIterator<Item = (&'a TaskKey, &'a TaskKey)>,
    {
        let tasks: Vec<(&TaskKey, &[TaskKey])> = tasks.into_iter().collect();
        if self.keys.len() + tasks.len() > TASKS_PER_WORKFLOW_MAX {
            return Err(DagError::TooManyTasks);
        }
        for (key, _) in &tasks {
            if self.index.contains_key(*key) {
                return Err(DagError::DuplicateTask((*key).clone()));
            }
            let n = self.keys.len() as u32;
            self.index.insert((*key).clone(), n);
            self.keys.push((*key).clone());
            self.deps.push(Vec::new());
            self.dependents.push(Vec::new());
            self.open.push(0);
            self.status.push(NodeStatus::Waiting);
        }
        let mut new_edges: Vec<(u32, u32)> = Vec::new();
        for (key, deps) in &tasks {
            let n = self.index[*key];
            for dep in deps.iter() {
                let d =
                    self.index
                        .get(dep)
                        .copied()
                        .ok_or_else(|| DagError::UnknownDependency {
                            task: (*key).clone(),
                            dependency: dep.clone(),
                        })?;
                new_edges.push((n, d));
            }
        }
        for (dependent, dependency) in edges {
            let n = self.node(dependent)?;
            let d =
                self.index
                    .get(dependency)
                    .copied()
                    .ok_or_else(|| DagError::UnknownDependency {
                        task: dependent.clone(),
                        dependency: dependency.clone(),
                    })?;
            let status = self.status[n as usize];
            if (n as usize) < mark.nodes && status != NodeStatus::Waiting {
                return Err(DagError::TooLateToDepend {
                    task: dependent.clone(),
                    status,
                });
            }
            new_edges.push((n, d));
        }
        let mut unique = std::collections::HashSet::with_capacity(new_edges.len());
        for &(n, d) in &new_edges {
            let existing = (n as usize) < mark.nodes && self.deps[n as usize].contains(&d);
            if existing || !unique.insert((n, d)) {
                return Err(DagError::DuplicateDependency {
                    task: self.keys[n as usize].clone(),
                    dependency: self.keys[d as usize].clone(),
                });
            }
            self.deps[n as usize].push(d);
            self.dependents[d as usize].push(n);
            mark.edges.push((n, d));
        }
        let roots: Vec<u32> = new_edges.iter().map(|&(_, d)| d).collect();
        if let Some(cycle) = self.find_cycle(roots) {
            return Err(DagError::Cycle(cycle));
        }
        for &(n, d) in &new_edges {
            if self.status[d as usize] != NodeStatus::Completed {
                self.open[n as usize] += 1;
            }
        }
        for n in mark.nodes..self.keys.len() {
            if self.open[n] == 0 {
                self.status[n] = NodeStatus::Ready;
            }
        }
        let mut failed = Vec::new();
        for &(n, d) in &new_edges {
            if self.status[d as usize] == NodeStatus::Failed
                && self.status[n as usize] != NodeStatus::Failed
            {
                failed.push(n as usize);
                failed.extend(self.fail_from(n as usize));
            }
        }
        Ok(failed.into_iter().map(|n| self.keys[n].clone()).collect())
    }

    fn rollback(&mut self, mark: Mark) {
        for &(n, d) in mark.edges.iter().rev() {
            let popped = self.deps[n as usize].pop();
            debug_assert_eq!(popped, Some(d));
            let popped = self.dependents[d as usize].pop();
            debug_assert_eq!(popped, Some(n));
        }
        for key in self.keys.drain(mark.nodes..) {
            self.index.remove(&key);
        }
        self.deps.truncate(mark.nodes);
        self.dependents.truncate(mark.nodes);
        self.open.truncate(mark.nodes);
        self.status.truncate(mark.nodes);
    }

    /// A cycle among the nodes reachable from `roots` along dependencies, as keys from the
    /// first node back to itself. Iterative three-colour DFS: long chains cannot overflow.
    fn find_cycle(&self, roots: Vec<u32>) -> Option<Vec<TaskKey>> {
        const WHITE: u8 = 0;
        const GREY: u8 = 1;
        const BLACK: u8 = 2;
        let mut colour: Vec<u8> = vec![WHITE; self.keys.len()];
        for root in roots {
            if colour[root as usize] != WHITE {
                continue;
            }
            // Stack of (node, index of the next dependency to visit).
            let mut stack: Vec<(u32, usize)> = vec![(root, 0)];
            colour[root as usize] = GREY;
            while let Some(&mut (n, ref mut next)) = stack.last_mut() {
                if let Some(&d) = self.deps[n as usize].get(*next) {
                    *next += 1;
                    match colour[d as usize] {
                        WHITE => {
                            colour[d as usize] = GREY;
                            stack.push((d, 0));
                        }
                        GREY => {
                            let start = stack.iter().position(|&(s, _)| s == d).unwrap_or(0);
                            let mut cycle: Vec<TaskKey> = stack[start..]
                                .iter()
                                .map(|&(s, _)| self.keys[s as usize].clone())
                                .collect();
                            cycle.push(self.keys[d as usize].clone());
                            return Some(cycle);
                        }
                        _ => {}
                    }
                } else {
                    colour[n as usize] = BLACK;
                    stack.pop();
                }
            }
        }
        None
    }

    fn node(&self, key: &TaskKey) -> Result<u32, DagError> {
        self.index
            .get(key)
            .copied()
            .ok_or_else(|| DagError::UnknownTask(key.clone()))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn contains(&self, key: &TaskKey) -> bool {
        self.index.contains_key(key)
    }

    pub fn status(&self, key: &TaskKey) -> Result<NodeStatus, DagError> {
        Ok(self.status[self.node(key)? as usize])
    }

    /// The tasks `key` depends on.
    pub fn dependencies(&self, key: &TaskKey) -> Result<Vec<&TaskKey>, DagError> {
        Ok(self.keys_of(&self.deps[self.node(key)? as usize]))
    }

    /// The tasks that depend on `key`.
    pub fn dependents(&self, key: &TaskKey) -> Result<Vec<&TaskKey>, DagError> {
        Ok(self.keys_of(&self.dependents[self.node(key)? as usize]))
    }

    fn keys_of(&self, nodes: &[u32]) -> Vec<&TaskKey> {
        nodes.iter().map(|&n| &self.keys[n as usize]).collect()
    }

    /// Every task after all of its dependencies (Kahn's algorithm; ties in insertion order).
    pub fn topological_order(&self) -> Vec<&TaskKey> {
        let mut indegree: Vec<usize> = self.deps.iter().map(Vec::len).collect();
        let mut queue: std::collections::VecDeque<u32> = (0..self.keys.len() as u32)
            .filter(|&n| indegree[n as usize] == 0)
            .collect();
        let mut order = Vec::with_capacity(self.keys.len());
        while let Some(n) = queue.pop_front() {
            order.push(&self.keys[n as usize]);
            for &m in &self.dependents[n as usize] {
                indegree[m as usize] -= 1;
                if indegree[m as usize] == 0 {
                    queue.push_back(m);
                }
            }
        }
        debug_assert_eq!(order.len(), self.keys.len(), "the graph is acyclic");
        order
    }

    /// The tasks ready to run now.
    pub fn ready(&self) -> Vec<&TaskKey> {
        (0..self.keys.len())
            .filter(|&n| self.status[n] == NodeStatus::Ready)
            .map(|n| &self.keys[n])
            .collect()
    }

    /// Marks a ready task completed; returns the dependents that became ready. Costs time
    /// proportional to the task's dependents.
    pub fn complete(&mut self, key: &TaskKey) -> Result<Vec<&TaskKey>, DagError> {
        let n = self.node(key)? as usize;
        if self.status[n] != NodeStatus::Ready {
            return Err(DagError::NotReady {
                task: key.clone(),
                status: self.status[n],
            });
        }
        self.status[n] = NodeStatus::Completed;
        let mut released = Vec::new();
        for &m in &self.dependents[n] {
            let m = m as usize;
            self.open[m] -= 1;
            if self.open[m] == 0 && self.status[m] == NodeStatus::Waiting {
                self.status[m] = NodeStatus::Ready;
                released.push(m);
            }
        }
        Ok(released.into_iter().map(|m| &self.keys[m]).collect())
    }

    /// Marks a task failed or cancelled (a completed task cannot fail), and with it every task
    /// downstream that has not ended: those are returned. Costs time proportional to the edges
    /// touched.
    pub fn fail(&mut self, key: &TaskKey) -> Result<Vec<&TaskKey>, DagError> {
        let n = self.node(key)? as usize;
        if self.status[n] == NodeStatus::Completed {
            return Err(DagError::AlreadyCompleted(key.clone()));
        }
        let cancelled = self.fail_from(n);
        Ok(cancelled.into_iter().map(|m| &self.keys[m]).collect())
    }

    fn fail_from(&mut self, n: usize) -> Vec<usize> {
        self.status[n] = NodeStatus::Failed;
        let mut cancelled = Vec::new();
        let mut frontier = vec![n];
        while let Some(n) = frontier.pop() {
            for &m in &self.dependents[n] {
                let m = m as usize;
                if matches!(self.status[m], NodeStatus::Waiting | NodeStatus::Ready) {
                    self.status[m] = NodeStatus::Failed;
                    cancelled.push(m);
                    frontier.push(m);
                }
            }
        }
        cancelled
    }
}

struct Mark {
    nodes: usize,
    edges: Vec<(u32, u32)>,
}
