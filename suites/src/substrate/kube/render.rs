//! The dry run's text: the plan as sections (`==> cluster`, `==> images`,
//! `==> install VARIANT`, `==> job N/M LABEL`, `==> teardown`, ...), commands
//! as `$ ` lines a shell could run, manifests as `<<'EOF'` here-documents of
//! YAML, and what bench does between commands as `# ` lines.

use std::fmt::Write as _;

use super::manifests;
use super::meshes::{Action, Mesh};
use super::plan::{Plan, Probe, Step, SAMPLE_INTERVAL};

fn steps(out: &mut String, steps: &[Step]) {
    for s in steps {
        step(out, s);
    }
}

fn step(out: &mut String, s: &Step) {
    match s {
        Step::Do(a) => {
            let _ = writeln!(out, "$ {}", a.line());
        }
        Step::Apply { cmd, manifests: m } => {
            let _ = writeln!(out, "$ {cmd} <<'EOF'");
            out.push_str(&manifests::render(m));
            out.push_str("EOF\n");
        }
        Step::Unless { probe, then } => {
            match probe {
                Probe::KindCluster { cmd, name } => {
                    let _ = writeln!(out, "$ {cmd}");
                    let _ = writeln!(out, "# if {name} is not listed (then this run created it):");
                }
                Probe::Succeeds { cmd, what } => {
                    let _ = writeln!(out, "$ {cmd}");
                    let _ = writeln!(
                        out,
                        "# if NotFound ({what}): this run installs it, and uninstalls it at the end"
                    );
                }
            }
            steps(out, then);
        }
    }
}

fn section(out: &mut String, title: &str) {
    let _ = writeln!(out, "\n==> {title}");
}

/// The whole plan, for `--dry-run`.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let jobs = plan.jobs().count();
    let skipped: usize = plan.skipped.iter().map(|s| s.cells).sum::<usize>()
        + plan
            .groups
            .iter()
            .filter(|g| g.available.is_err())
            .flat_map(|g| g.variants.iter().flat_map(|v| v.scenarios.iter().map(|s| s.jobs.len())))
            .sum::<usize>();
    let _ = writeln!(
        out,
        "# bench run --substrate {} --suite {} --dry-run: the plan; nothing was run or changed.",
        plan.substrate, plan.suite
    );
    let _ = writeln!(
        out,
        "# run {}, namespace {}; {} cells: {} run as Jobs, {} skipped (reasons below).",
        plan.run_id, plan.namespace, plan.cells, jobs, skipped
    );
    let _ = writeln!(
        out,
        "# Cells run grouped by mesh, then variant (a mesh is installed once), not interleaved as on local."
    );

    section(&mut out, "cluster");
    steps(&mut out, &plan.cluster);
    section(&mut out, "images");
    steps(&mut out, &plan.image_steps);
    section(&mut out, &format!("namespace {}", plan.namespace));
    steps(&mut out, &plan.setup);

    section(&mut out, "sampling");
    let _ = writeln!(
        out,
        "# nodes: GET /api/v1/nodes (once); then every {} during each cell's measured window (after its warm-up):",
        humantime::format_duration(SAMPLE_INTERVAL)
    );
    let _ = writeln!(out, "#   GET /api/v1/nodes/<node>/proxy/stats/summary for every node (kubelet stats through the API server)");
    let _ = writeln!(
        out,
        "#   per container: CPU (usageCoreNanoSeconds rate over the window), memory (rssBytes, else workingSetBytes: peak, mean)"
    );
    let _ = writeln!(out, "#   each job below lists its components");

    for s in &plan.skipped {
        let sc = &plan_scenario_name(plan, s.scenario);
        let what = match s.variant {
            Some(v) => format!("skip {v} in scenario {sc}"),
            None => format!("skip scenario {sc}"),
        };
        section(&mut out, &format!("{what} ({})", cells(s.cells)));
        let _ = writeln!(out, "# WARNING: {}", s.reason);
    }

    for g in &plan.groups {
        if let Err(reason) = &g.available {
            for v in &g.variants {
                let n: usize = v.scenarios.iter().map(|s| s.jobs.len()).sum();
                section(&mut out, &format!("skip {} ({})", v.variant, cells(n)));
                let _ = writeln!(out, "# WARNING: {reason}");
            }
            continue;
        }
        for (i, v) in g.variants.iter().enumerate() {
            section(&mut out, &format!("install {} (mesh: {})", v.variant, g.mesh.as_str()));
            if g.mesh == Mesh::None {
                let _ = writeln!(out, "# no mesh: nothing to install, no injection mark on the namespace");
            } else if i == 0 {
                steps(&mut out, &g.install);
            } else {
                let _ = writeln!(out, "# {} is installed above", g.mesh.as_str());
            }
            if let Some(c) = &v.opt_in {
                let _ = writeln!(out, "$ {c}");
            }
            let _ = writeln!(
                out,
                "# sidecars: client {}, server {}",
                if v.sides.client { "yes" } else { "no" },
                if v.sides.server { "yes" } else { "no" }
            );
            for s in &v.scenarios {
                let name = plan_scenario_name(plan, s.scenario);
                section(&mut out, &format!("server {name} ({})", v.variant));
                step(&mut out, &s.server);
                for r in &s.rollouts {
                    let _ = writeln!(out, "$ {r}");
                }
                for j in &s.jobs {
                    section(&mut out, &format!("job {}/{} {}", j.number, plan.cells, j.label));
                    step(&mut out, &j.apply);
                    let _ = writeln!(
                        out,
                        "# wait until container {} of the Job's pod runs (GET /api/v1/namespaces/{}/pods?labelSelector=job-name={})",
                        manifests::LOAD_CONTAINER, plan.namespace, j.name
                    );
                    let comps: Vec<String> = j
                        .watches
                        .iter()
                        .map(|w| match &w.container {
                            Some(c) => format!("{} ({}: {c} in {}/{}*)", w.name, w.role.as_str(), w.namespace, w.pod_prefix),
                            None => format!("{}/* ({}: every container in namespace {})", w.name, w.role.as_str(), w.namespace),
                        })
                        .collect();
                    let _ = writeln!(
                        out,
                        "# sample after {} of warm-up for {}: {}",
                        humantime::format_duration(j.warmup),
                        humantime::format_duration(j.window),
                        comps.join(", ")
                    );
                    let _ = writeln!(
                        out,
                        "# wait until container {} terminates (deadline {}); the `{}` line of its log is the cell's record",
                        manifests::LOAD_CONTAINER,
                        humantime::format_duration(j.deadline),
                        loadgen::RECORD_LINE_PREFIX.trim_end()
                    );
                    let _ = writeln!(out, "$ {}", j.delete);
                }
                section(&mut out, &format!("remove server {name} ({})", v.variant));
                let _ = writeln!(out, "$ {}", s.remove);
            }
            if let Some(c) = &v.opt_out {
                section(&mut out, &format!("done {}", v.variant));
                let _ = writeln!(out, "$ {c}");
            }
        }
        if !g.uninstall.is_empty() {
            section(&mut out, &format!("uninstall {}", g.mesh.as_str()));
            let _ = writeln!(out, "# only if this run installed it:");
            for a in &g.uninstall {
                let _ = writeln!(out, "$ {}", Action::line(a));
            }
        }
    }

    section(&mut out, "teardown");
    let _ = writeln!(
        out,
        "# also on an error or Ctrl-C; `bench clean --substrate {}` removes what a killed run left",
        plan.substrate
    );
    steps(&mut out, &plan.teardown);
    if let Some(a) = &plan.delete_cluster {
        let _ = writeln!(out, "# only if this run created the cluster (--delete-cluster):");
        let _ = writeln!(out, "$ {}", a.line());
    }
    out
}

fn plan_scenario_name(plan: &Plan, i: usize) -> String {
    plan.scenario_names.get(i).cloned().unwrap_or_else(|| i.to_string())
}

fn cells(n: usize) -> String {
    format!("{n} cell{}", if n == 1 { "" } else { "s" })
}
