//! Scenarios of a workflow's dependency graph, through the public `Dag` API only.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use baton_core::{Dag, DagError, NodeStatus, TaskKey, TaskSpec};
use proptest::prelude::*;
use proptest::sample::Index;

type Graph = Vec<(TaskKey, Vec<TaskKey>)>;

fn k(name: &str) -> TaskKey {
    TaskKey::from(name)
}

fn graph(tasks: &[(&str, &[&str])]) -> Graph {
    tasks
        .iter()
        .map(|(key, deps)| (k(key), deps.iter().map(|d| k(d)).collect()))
        .collect()
}

fn build(graph: &Graph) -> Result<Dag, DagError> {
    Dag::build(graph.iter().map(|(key, deps)| (key, deps.as_slice())))
}

fn dag(tasks: &[(&str, &[&str])]) -> Dag {
    build(&graph(tasks)).expect("a valid graph")
}

fn extend(
    dag: &mut Dag,
    tasks: &[(&str, &[&str])],
    edges: &[(&str, &str)],
) -> Result<Vec<TaskKey>, DagError> {
    let tasks = graph(tasks);
    let edges: Vec<(TaskKey, TaskKey)> = edges.iter().map(|(a, b)| (k(a), k(b))).collect();
    dag.extend(
        tasks.iter().map(|(key, deps)| (key, deps.as_slice())),
        edges
            .iter()
            .map(|(dependent, dependency)| (dependent, dependency)),
    )
}

fn names(keys: Vec<&TaskKey>) -> Vec<String> {
    let mut names: Vec<String> = keys.into_iter().map(|key| key.0.clone()).collect();
    names.sort();
    names
}

fn complete(dag: &mut Dag, key: &str) -> Vec<String> {
    names(dag.complete(&k(key)).expect("the task is ready"))
}

fn status(dag: &Dag, key: &str) -> NodeStatus {
    dag.status(&k(key)).expect("a task of the graph")
}

/// Everything observable about a graph, to show that a refused change left it untouched.
#[derive(Debug, PartialEq)]
struct Snapshot {
    len: usize,
    order: Vec<TaskKey>,
    ready: Vec<TaskKey>,
    nodes: Vec<(TaskKey, NodeStatus, Vec<TaskKey>, Vec<TaskKey>)>,
}

fn snapshot(dag: &Dag) -> Snapshot {
    let order: Vec<TaskKey> = dag.topological_order().into_iter().cloned().collect();
    let nodes = order
        .iter()
        .map(|key| {
            (
                key.clone(),
                dag.status(key).unwrap(),
                dag.dependencies(key)
                    .unwrap()
                    .into_iter()
                    .cloned()
                    .collect(),
                dag.dependents(key).unwrap().into_iter().cloned().collect(),
            )
        })
        .collect();
    Snapshot {
        len: dag.len(),
        ready: dag.ready().into_iter().cloned().collect(),
        order,
        nodes,
    }
}

fn assert_topological(dag: &Dag, graph: &Graph) {
    let order = dag.topological_order();
    assert_eq!(order.len(), graph.len());
    let position: HashMap<&TaskKey, usize> =
        order.iter().enumerate().map(|(i, key)| (*key, i)).collect();
    assert_eq!(position.len(), graph.len(), "every task exactly once");
    for (key, deps) in graph {
        for dep in deps {
            assert!(
                position[dep] < position[key],
                "`{key}` comes before its dependency `{dep}`"
            );
        }
    }
}

/// A listed cycle starts and ends with the same key and each entry depends on the next.
fn assert_real_cycle(cycle: &[TaskKey], graph: &Graph) {
    assert!(
        cycle.len() >= 2,
        "a cycle lists at least one edge: {cycle:?}"
    );
    assert_eq!(cycle.first(), cycle.last(), "{cycle:?}");
    let deps: HashMap<&TaskKey, &Vec<TaskKey>> =
        graph.iter().map(|(key, deps)| (key, deps)).collect();
    for pair in cycle.windows(2) {
        assert!(
            deps[&pair[0]].contains(&pair[1]),
            "`{}` does not depend on `{}` in {cycle:?}",
            pair[0],
            pair[1]
        );
    }
    let distinct: BTreeSet<&TaskKey> = cycle[1..].iter().collect();
    assert_eq!(
        distinct.len(),
        cycle.len() - 1,
        "the cycle repeats no task but its first"
    );
}

fn diamond() -> Dag {
    dag(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])])
}

#[test]
fn specs_build_a_graph_of_their_dependencies() {
    let mut fetch = TaskSpec::new("fetch");
    fetch.priority = 5;
    let mut parse = TaskSpec::new("parse");
    parse.depends_on = vec![k("fetch")];
    let mut report = TaskSpec::new("report");
    report.depends_on = vec![k("parse"), k("fetch")];

    let dag = Dag::from_specs(&[fetch, parse, report]).unwrap();

    assert_eq!(dag.len(), 3);
    assert!(!dag.is_empty());
    assert!(dag.contains(&k("report")));
    assert!(!dag.contains(&k("publish")));
    assert_eq!(
        names(dag.dependencies(&k("report")).unwrap()),
        ["fetch", "parse"]
    );
    assert_eq!(
        names(dag.dependents(&k("fetch")).unwrap()),
        ["parse", "report"]
    );
    assert_eq!(names(dag.ready()), ["fetch"]);
}

#[test]
fn pairs_may_name_a_dependency_defined_later_in_the_batch() {
    let dag = dag(&[("deploy", &["test"]), ("test", &["build"]), ("build", &[])]);

    assert_eq!(names(dag.ready()), ["build"]);
    assert_eq!(status(&dag, "deploy"), NodeStatus::Waiting);
    let order: Vec<&str> = dag
        .topological_order()
        .into_iter()
        .map(TaskKey::as_str)
        .collect();
    assert_eq!(order, ["build", "test", "deploy"]);
}

#[test]
fn an_empty_workflow_is_an_empty_graph() {
    let dag = Dag::build(std::iter::empty()).unwrap();

    assert!(dag.is_empty());
    assert!(dag.ready().is_empty());
    assert!(dag.topological_order().is_empty());
}

#[test]
fn unknown_dependency_is_refused_naming_task_and_dependency() {
    let mut spec = TaskSpec::new("b");
    spec.depends_on = vec![k("ghost")];

    let err = Dag::from_specs(&[TaskSpec::new("a"), spec]).unwrap_err();

    assert_eq!(
        err,
        DagError::UnknownDependency {
            task: k("b"),
            dependency: k("ghost")
        }
    );
}

#[test]
fn duplicate_task_is_refused() {
    let err = build(&graph(&[("a", &[]), ("b", &["a"]), ("a", &[])])).unwrap_err();

    assert_eq!(err, DagError::DuplicateTask(k("a")));
}

#[test]
fn duplicate_dependency_is_refused() {
    let err = build(&graph(&[("a", &[]), ("b", &["a", "a"])])).unwrap_err();

    assert_eq!(
        err,
        DagError::DuplicateDependency {
            task: k("b"),
            dependency: k("a")
        }
    );
}

#[test]
fn self_dependency_is_a_cycle_of_one() {
    let err = build(&graph(&[("a", &[]), ("b", &["a", "b"])])).unwrap_err();

    assert_eq!(err, DagError::Cycle(vec![k("b"), k("b")]));
}

#[test]
fn three_cycle_is_refused_listing_exactly_its_tasks_in_dependency_order() {
    let tasks = graph(&[
        ("root", &[]),
        ("x", &["root", "z"]),
        ("y", &["x"]),
        ("z", &["y"]),
        ("tail", &["x"]),
    ]);

    let Err(DagError::Cycle(cycle)) = build(&tasks) else {
        panic!("a cycle must be refused");
    };

    assert_eq!(cycle.len(), 4);
    assert_real_cycle(&cycle, &tasks);
    let members: BTreeSet<&str> = cycle.iter().map(TaskKey::as_str).collect();
    assert_eq!(members, BTreeSet::from(["x", "y", "z"]));
    let message = DagError::Cycle(cycle).to_string();
    assert!(message.contains(" -> "), "{message}");
}

#[test]
fn diamond_orders_each_task_after_its_dependencies() {
    let tasks = graph(&[("d", &["b", "c"]), ("c", &["a"]), ("b", &["a"]), ("a", &[])]);
    let dag = build(&tasks).unwrap();

    assert_topological(&dag, &tasks);
    assert_eq!(
        dag.topological_order().first().map(|key| key.as_str()),
        Some("a")
    );
    assert_eq!(
        dag.topological_order().last().map(|key| key.as_str()),
        Some("d")
    );
}

#[test]
fn larger_scrambled_graph_orders_each_task_after_its_dependencies() {
    const N: u64 = 500;
    let mut lcg: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        lcg = lcg
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        lcg >> 33
    };
    let mut deps: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); N as usize];
    for (i, d) in deps.iter_mut().enumerate().skip(1) {
        for _ in 0..next() % 4 {
            d.insert(next() % i as u64);
        }
    }
    let tasks: Graph = (0..N)
        .map(|step| (step * 7919) % N)
        .map(|i| {
            let key = k(&format!("t{i}"));
            let d = deps[i as usize]
                .iter()
                .map(|d| k(&format!("t{d}")))
                .collect();
            (key, d)
        })
        .collect();

    let dag = build(&tasks).unwrap();

    assert_eq!(dag.len(), N as usize);
    assert_topological(&dag, &tasks);
}

#[test]
fn dependencies_and_dependents_of_a_diamond() {
    let dag = diamond();

    assert_eq!(names(dag.dependencies(&k("d")).unwrap()), ["b", "c"]);
    assert!(dag.dependencies(&k("a")).unwrap().is_empty());
    assert_eq!(names(dag.dependents(&k("a")).unwrap()), ["b", "c"]);
    assert!(dag.dependents(&k("d")).unwrap().is_empty());
    assert_eq!(
        dag.dependents(&k("nope")),
        Err(DagError::UnknownTask(k("nope")))
    );
    assert_eq!(
        dag.status(&k("nope")),
        Err(DagError::UnknownTask(k("nope")))
    );
}

#[test]
fn diamond_join_is_released_by_its_second_branch_only() {
    let mut dag = diamond();
    assert_eq!(names(dag.ready()), ["a"]);

    assert_eq!(complete(&mut dag, "a"), ["b", "c"]);
    assert_eq!(names(dag.ready()), ["b", "c"]);
    assert!(complete(&mut dag, "c").is_empty());
    assert_eq!(status(&dag, "d"), NodeStatus::Waiting);
    assert_eq!(complete(&mut dag, "b"), ["d"]);
    assert_eq!(names(dag.ready()), ["d"]);
    assert!(complete(&mut dag, "d").is_empty());

    assert!(dag.ready().is_empty());
    for key in ["a", "b", "c", "d"] {
        assert_eq!(status(&dag, key), NodeStatus::Completed);
    }
}

#[test]
fn completing_a_task_that_is_not_ready_is_refused() {
    let mut dag = diamond();

    assert_eq!(
        dag.complete(&k("d")),
        Err(DagError::NotReady {
            task: k("d"),
            status: NodeStatus::Waiting
        })
    );
    complete(&mut dag, "a");
    assert_eq!(
        dag.complete(&k("a")),
        Err(DagError::NotReady {
            task: k("a"),
            status: NodeStatus::Completed
        })
    );
    dag.fail(&k("b")).unwrap();
    assert_eq!(
        dag.complete(&k("b")),
        Err(DagError::NotReady {
            task: k("b"),
            status: NodeStatus::Failed
        })
    );
    assert_eq!(
        dag.complete(&k("zzz")),
        Err(DagError::UnknownTask(k("zzz")))
    );
    assert_eq!(names(dag.ready()), ["c"]);
}

#[test]
fn failure_fails_the_unended_downstream_and_spares_completed_tasks() {
    let mut dag = dag(&[
        ("root", &[]),
        ("left", &["root"]),
        ("right", &["root"]),
        ("join", &["left", "right"]),
        ("after", &["join"]),
        ("aside", &["left"]),
    ]);
    complete(&mut dag, "root");
    complete(&mut dag, "left");

    let failed = names(dag.fail(&k("right")).unwrap());

    assert_eq!(failed, ["after", "join"]);
    assert_eq!(status(&dag, "right"), NodeStatus::Failed);
    assert_eq!(status(&dag, "join"), NodeStatus::Failed);
    assert_eq!(status(&dag, "after"), NodeStatus::Failed);
    assert_eq!(status(&dag, "root"), NodeStatus::Completed);
    assert_eq!(status(&dag, "left"), NodeStatus::Completed);
    assert_eq!(status(&dag, "aside"), NodeStatus::Ready);
    assert_eq!(names(dag.ready()), ["aside"]);
}

#[test]
fn failed_tasks_are_never_released_nor_reported_failed_twice() {
    let mut dag = dag(&[
        ("a", &[]),
        ("b", &[]),
        ("c", &["a"]),
        ("d", &["b", "c"]),
        ("e", &["d"]),
    ]);
    complete(&mut dag, "a");

    assert_eq!(names(dag.fail(&k("b")).unwrap()), ["d", "e"]);
    assert!(dag.fail(&k("b")).unwrap().is_empty());
    assert!(complete(&mut dag, "c").is_empty());
    assert_eq!(status(&dag, "d"), NodeStatus::Failed);
    assert!(dag.ready().is_empty());
}

#[test]
fn a_ready_task_can_fail_and_takes_only_its_own_downstream_with_it() {
    let mut dag = diamond();
    complete(&mut dag, "a");

    assert_eq!(names(dag.fail(&k("c")).unwrap()), ["d"]);
    assert_eq!(status(&dag, "c"), NodeStatus::Failed);
    assert_eq!(names(dag.ready()), ["b"]);
    assert!(complete(&mut dag, "b").is_empty());
}

#[test]
fn a_waiting_task_cancelled_directly_is_not_released_when_its_dependencies_complete() {
    let mut dag = diamond();

    assert!(dag.fail(&k("d")).unwrap().is_empty());
    complete(&mut dag, "a");
    complete(&mut dag, "b");

    assert!(complete(&mut dag, "c").is_empty());
    assert_eq!(status(&dag, "d"), NodeStatus::Failed);
    assert!(dag.ready().is_empty());
}

#[test]
fn decomposition_makes_the_dependent_wait_for_the_subtasks_too() {
    let mut dag = dag(&[("input", &[]), ("work", &["input"]), ("publish", &["work"])]);
    complete(&mut dag, "input");
    assert_eq!(names(dag.ready()), ["work"]);

    extend(
        &mut dag,
        &[("work.part1", &["input"]), ("work.part2", &["work.part1"])],
        &[("publish", "work.part1"), ("publish", "work.part2")],
    )
    .unwrap();

    assert_eq!(dag.len(), 5);
    assert_eq!(
        names(dag.dependencies(&k("publish")).unwrap()),
        ["work", "work.part1", "work.part2"]
    );
    assert_eq!(names(dag.ready()), ["work", "work.part1"]);
    assert!(complete(&mut dag, "work").is_empty());
    assert_eq!(complete(&mut dag, "work.part1"), ["work.part2"]);
    assert_eq!(complete(&mut dag, "work.part2"), ["publish"]);
    let tasks = graph(&[
        ("input", &[]),
        ("work", &["input"]),
        ("work.part1", &["input"]),
        ("work.part2", &["work.part1"]),
        ("publish", &["work", "work.part1", "work.part2"]),
    ]);
    assert_topological(&dag, &tasks);
}

#[test]
fn extension_closing_a_cycle_is_refused_and_changes_nothing() {
    let mut dag = dag(&[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &["c"])]);
    complete(&mut dag, "a");
    let before = snapshot(&dag);

    let refused = extend(&mut dag, &[("sub", &["d"])], &[("c", "sub")]);

    let Err(DagError::Cycle(cycle)) = refused else {
        panic!("expected a cycle, got {refused:?}");
    };
    let with_extension = graph(&[
        ("a", &[]),
        ("b", &["a"]),
        ("c", &["b", "sub"]),
        ("d", &["c"]),
        ("sub", &["d"]),
    ]);
    assert_real_cycle(&cycle, &with_extension);
    assert_eq!(snapshot(&dag), before);
    assert!(!dag.contains(&k("sub")));

    extend(&mut dag, &[("sub", &["b"])], &[("c", "sub")]).unwrap();
    assert_eq!(dag.len(), 5);
    assert_eq!(complete(&mut dag, "b"), ["sub"]);
    assert_eq!(complete(&mut dag, "sub"), ["c"]);
    assert_eq!(complete(&mut dag, "c"), ["d"]);
    assert!(complete(&mut dag, "d").is_empty());
}

#[test]
fn any_refused_extension_leaves_the_graph_as_it_was() {
    let mut dag = diamond();
    complete(&mut dag, "a");
    let before = snapshot(&dag);

    assert_eq!(
        extend(&mut dag, &[("s1", &["a"]), ("s1", &[])], &[]),
        Err(DagError::DuplicateTask(k("s1")))
    );
    assert_eq!(
        extend(&mut dag, &[("s1", &["a"]), ("b", &[])], &[]),
        Err(DagError::DuplicateTask(k("b")))
    );
    assert_eq!(
        extend(
            &mut dag,
            &[("s1", &["a"]), ("s2", &["ghost"])],
            &[("d", "s1")]
        ),
        Err(DagError::UnknownDependency {
            task: k("s2"),
            dependency: k("ghost")
        })
    );
    assert_eq!(
        extend(&mut dag, &[("s1", &["a"])], &[("d", "s1"), ("d", "b")]),
        Err(DagError::DuplicateDependency {
            task: k("d"),
            dependency: k("b")
        })
    );
    assert_eq!(
        extend(&mut dag, &[("s1", &[])], &[("ghost", "s1")]),
        Err(DagError::UnknownTask(k("ghost")))
    );
    assert_eq!(
        extend(&mut dag, &[("s1", &[])], &[("d", "ghost")]),
        Err(DagError::UnknownDependency {
            task: k("d"),
            dependency: k("ghost")
        })
    );

    assert_eq!(snapshot(&dag), before);
    extend(&mut dag, &[("s1", &["a"])], &[("d", "s1")]).unwrap();
    assert_eq!(names(dag.ready()), ["b", "c", "s1"]);
}

#[test]
fn a_ready_or_completed_task_is_too_late_to_gain_a_dependency() {
    let mut dag = diamond();
    complete(&mut dag, "a");
    let before = snapshot(&dag);

    assert_eq!(
        extend(&mut dag, &[("sub", &[])], &[("b", "sub")]),
        Err(DagError::TooLateToDepend {
            task: k("b"),
            status: NodeStatus::Ready
        })
    );
    assert_eq!(
        extend(&mut dag, &[("sub", &[])], &[("a", "sub")]),
        Err(DagError::TooLateToDepend {
            task: k("a"),
            status: NodeStatus::Completed
        })
    );
    assert_eq!(snapshot(&dag), before);
}

#[test]
fn a_new_task_depending_on_a_failed_task_fails_with_its_own_dependents() {
    let mut dag = diamond();
    complete(&mut dag, "a");
    dag.fail(&k("b")).unwrap();

    let failed = extend(
        &mut dag,
        &[("late", &["b"]), ("later", &["late"]), ("fine", &["a"])],
        &[],
    )
    .unwrap();
    assert_eq!(failed, [k("late"), k("later")]);

    assert_eq!(status(&dag, "late"), NodeStatus::Failed);
    assert_eq!(status(&dag, "later"), NodeStatus::Failed);
    assert_eq!(status(&dag, "fine"), NodeStatus::Ready);
    assert_eq!(names(dag.ready()), ["c", "fine"]);
}

#[test]
fn a_dependency_on_a_completed_task_is_already_met() {
    let mut dag = diamond();
    complete(&mut dag, "a");
    complete(&mut dag, "b");

    extend(&mut dag, &[("sub", &["a", "b"])], &[("d", "sub")]).unwrap();

    assert_eq!(status(&dag, "sub"), NodeStatus::Ready);
    assert!(complete(&mut dag, "c").is_empty());
    assert_eq!(complete(&mut dag, "sub"), ["d"]);
}

fn chain(len: usize, back_edge: bool) -> Graph {
    (0..len)
        .map(|i| {
            let mut deps = Vec::new();
            if i > 0 {
                deps.push(k(&format!("n{}", i - 1)));
            }
            if i == 0 && back_edge {
                deps.push(k(&format!("n{}", len - 1)));
            }
            (k(&format!("n{i}")), deps)
        })
        .collect()
}

/// Runs `f` on a thread with a small stack, so that recursion as deep as the graph would fail.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .expect("no stack overflow")
}

#[test]
fn ten_thousand_task_chain_builds_and_its_back_edge_is_a_cycle() {
    const N: usize = 10_000;
    on_small_stack(|| {
        let forward = chain(N, false);
        let mut dag = build(&forward).unwrap();
        assert_eq!(dag.len(), N);
        assert_topological(&dag, &forward);

        let backward: Graph = forward.iter().rev().cloned().collect();
        assert_eq!(build(&backward).unwrap().len(), N);

        let mut completed = 0;
        let mut next = dag.ready().into_iter().cloned().collect::<Vec<_>>();
        while let Some(key) = next.pop() {
            next.extend(dag.complete(&key).unwrap().into_iter().cloned());
            completed += 1;
        }
        assert_eq!(completed, N);

        let cyclic = chain(N, true);
        let Err(DagError::Cycle(cycle)) = build(&cyclic) else {
            panic!("the back edge closes a cycle");
        };
        assert_eq!(cycle.len(), N + 1);
        assert_real_cycle(&cycle, &cyclic);
    });
}

#[derive(Clone, Debug)]
struct RandomDag {
    /// `deps[i]`: the lower-numbered tasks task `i` depends on.
    deps: Vec<Vec<usize>>,
    /// The order in which the tasks are handed to `Dag::build`.
    insertion: Vec<usize>,
}

impl RandomDag {
    fn key(i: usize) -> TaskKey {
        k(&format!("t{i}"))
    }

    fn graph(&self) -> Graph {
        self.insertion
            .iter()
            .map(|&i| {
                (
                    Self::key(i),
                    self.deps[i].iter().map(|&d| Self::key(d)).collect(),
                )
            })
            .collect()
    }
}

fn random_dag() -> impl Strategy<Value = RandomDag> {
    (1usize..=40)
        .prop_flat_map(|n| {
            (
                proptest::collection::vec(proptest::collection::vec(any::<Index>(), 0..4), n),
                Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
            )
        })
        .prop_map(|(picks, insertion)| {
            let deps = picks
                .iter()
                .enumerate()
                .map(|(i, picks)| match i {
                    0 => Vec::new(),
                    _ => picks
                        .iter()
                        .map(|p| p.index(i))
                        .collect::<BTreeSet<usize>>()
                        .into_iter()
                        .collect(),
                })
                .collect();
            RandomDag { deps, insertion }
        })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_graph_whose_edges_point_to_lower_indices_is_accepted_and_ordered(g in random_dag()) {
        let tasks = g.graph();
        let dag = build(&tasks).unwrap();
        prop_assert_eq!(dag.len(), tasks.len());
        assert_topological(&dag, &tasks);
    }

    #[test]
    fn a_back_edge_closing_a_path_is_refused_with_a_real_cycle(
        g in random_dag(),
        start in any::<Index>(),
        steps in proptest::collection::vec(any::<Index>(), 0..8),
    ) {
        let first = start.index(g.deps.len());
        let mut last = first;
        for step in &steps {
            let deps = &g.deps[last];
            if deps.is_empty() {
                break;
            }
            last = deps[step.index(deps.len())];
        }
        let back_edge = (RandomDag::key(last), RandomDag::key(first));

        let mut cyclic = g.clone();
        cyclic.deps[last].push(first);
        let cyclic = cyclic.graph();
        let Err(DagError::Cycle(cycle)) = build(&cyclic) else {
            panic!("{} depending on {} closes a cycle", back_edge.0, back_edge.1);
        };
        assert_real_cycle(&cycle, &cyclic);
        prop_assert!(cycle.windows(2).any(|w| (&w[0], &w[1]) == (&back_edge.0, &back_edge.1)));

        let mut dag = build(&g.graph()).unwrap();
        if dag.status(&back_edge.0).unwrap() == NodeStatus::Waiting {
            let before = snapshot(&dag);
            let refused = dag.extend(std::iter::empty(), [(&back_edge.0, &back_edge.1)]);
            let Err(DagError::Cycle(cycle)) = refused else {
                panic!("extending with the back edge gave {refused:?}");
            };
            assert_real_cycle(&cycle, &cyclic);
            prop_assert_eq!(snapshot(&dag), before);
        }
    }

    #[test]
    fn completing_tasks_as_they_become_ready_releases_each_exactly_once(
        g in random_dag(),
        choices in proptest::collection::vec(any::<Index>(), 1..64),
    ) {
        let tasks = g.graph();
        let mut dag = build(&tasks).unwrap();
        let mut releases: BTreeMap<TaskKey, usize> = BTreeMap::new();
        let mut pool: Vec<TaskKey> = dag.ready().into_iter().cloned().collect();
        for key in &pool {
            *releases.entry(key.clone()).or_default() += 1;
        }
        let mut completed = 0;
        while !pool.is_empty() {
            let pick = choices[completed % choices.len()].index(pool.len());
            let key = pool.swap_remove(pick);
            for dep in dag.dependencies(&key).unwrap() {
                prop_assert_eq!(dag.status(dep).unwrap(), NodeStatus::Completed);
            }
            let released: Vec<TaskKey> = dag.complete(&key).unwrap().into_iter().cloned().collect();
            for key in released {
                prop_assert_eq!(dag.status(&key).unwrap(), NodeStatus::Ready);
                *releases.entry(key.clone()).or_default() += 1;
                pool.push(key);
            }
            completed += 1;
        }
        prop_assert_eq!(completed, tasks.len());
        prop_assert_eq!(releases.len(), tasks.len());
        prop_assert!(releases.values().all(|&n| n == 1), "{:?}", releases);
        prop_assert!(dag.ready().is_empty());
        for (key, _) in &tasks {
            prop_assert_eq!(dag.status(key).unwrap(), NodeStatus::Completed);
        }
    }
}

#[test]
fn a_completed_task_cannot_fail() {
    let mut dag = diamond();
    complete(&mut dag, "a");
    assert_eq!(
        dag.fail(&k("a")).unwrap_err(),
        DagError::AlreadyCompleted(k("a"))
    );
    assert_eq!(status(&dag, "a"), NodeStatus::Completed);
    assert_eq!(names(dag.ready()), ["b", "c"]);
}
