//! Where read tasks run on a cluster: on the nodes that see their files.
//!
//! When a file source is planned on a cluster of several nodes, one probe task per live
//! node (no CPU, pinned to it) reports which of the source's files it sees, with the
//! size the driver sees. A file every node sees is read wherever the scheduler spreads
//! its tasks; a file only some nodes see (local disks) has its read tasks pinned to
//! those nodes, in turn; a file no node sees is a [`DataError::NotFound`] that says so,
//! before anything runs. Embedded, the one node sees what the driver sees.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{DataError, Result};
use crate::source::Unit;

/// How long the probes may take before planning fails.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Which of `paths` this node sees with the given sizes. A task.
#[prism::remote]
pub fn files_seen(paths: Vec<PathBuf>, sizes: Vec<u64>) -> Vec<bool> {
    paths
        .iter()
        .zip(&sizes)
        .map(|(p, size)| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() == *size))
        .collect()
}

/// The node each unit's read task must run on (`None`: any), probing the live nodes of
/// a cluster for the units' files.
pub(crate) fn place(units: &[Unit]) -> Result<Vec<Option<String>>> {
    let nodes: Vec<String> = prism::nodes()
        .map(|ns| {
            ns.into_iter()
                .filter(|n| n.alive)
                .map(|n| n.node_id)
                .collect()
        })
        .unwrap_or_default();
    let mut files: Vec<PathBuf> = units.iter().flat_map(|u| u.files()).collect();
    files.sort();
    files.dedup();
    if nodes.len() <= 1 || files.is_empty() {
        return Ok(vec![None; units.len()]);
    }
    let sizes: Vec<u64> = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| DataError::Io {
            path: files[0].display().to_string(),
            message: e.to_string(),
        })?;
    let probes: Vec<_> = nodes
        .iter()
        .map(|node| {
            files_seen::options()
                .num_cpus(0.0)
                .scheduling(prism::Strategy::NodeAffinity {
                    node_id: node.clone(),
                    soft: false,
                })
                .remote(files.clone(), sizes.clone())
        })
        .collect();
    let mut seen = Vec::with_capacity(nodes.len());
    for (node, p) in nodes.iter().zip(&probes) {
        let answer = prism::get_timeout(p, PROBE_TIMEOUT).map_err(|e| {
            DataError::Runtime(format!(
                "asking node {node} which of the {} files it sees: {e}",
                files.len()
            ))
        })?;
        seen.push(answer);
    }
    let unit_files: Vec<Vec<usize>> = units
        .iter()
        .map(|u| {
            u.files()
                .iter()
                .filter_map(|f| files.binary_search(f).ok())
                .collect()
        })
        .collect();
    assign(&unit_files, &seen, &nodes).map_err(|file| DataError::NotFound {
        path: files[file].display().to_string(),
        message: format!(
            "no node of the cluster sees this file (of {} nodes); every node that reads it must see it at this path",
            nodes.len()
        ),
    })
}

/// The node of each unit, given the files each unit reads (indices), which nodes see
/// each file (`seen[node][file]`) and the nodes' ids: `None` for units whose files every
/// node sees, else the nodes that see all of them, in turn. `Err(file)` names a file
/// no node sees.
pub(crate) fn assign(
    unit_files: &[Vec<usize>],
    seen: &[Vec<bool>],
    nodes: &[String],
) -> std::result::Result<Vec<Option<String>>, usize> {
    let mut turn = std::collections::HashMap::<Vec<usize>, usize>::new();
    unit_files
        .iter()
        .map(|files| {
            let able: Vec<usize> = (0..nodes.len())
                .filter(|&n| files.iter().all(|&f| seen[n][f]))
                .collect();
            if able.len() == nodes.len() {
                return Ok(None);
            }
            if able.is_empty() {
                let unseen = files
                    .iter()
                    .copied()
                    .find(|&f| seen.iter().all(|s| !s[f]))
                    .or(files.first().copied())
                    .unwrap_or(0);
                return Err(unseen);
            }
            let t = turn.entry(able.clone()).or_insert(0);
            let node = nodes[able[*t % able.len()]].clone();
            *t += 1;
            Ok(Some(node))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::assign;

    #[test]
    fn units_go_to_the_nodes_that_see_their_files() {
        let nodes = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        // File 0 everywhere, file 1 on b and c, file 2 on a only, file 3 nowhere.
        let seen = vec![
            vec![true, false, true, false],
            vec![true, true, false, false],
            vec![true, true, false, false],
        ];
        let units = vec![vec![0], vec![1], vec![1], vec![1], vec![2], vec![0, 1]];
        let placed = assign(&units, &seen, &nodes).unwrap();
        assert_eq!(
            placed,
            vec![
                None,
                Some("b".into()),
                Some("c".into()),
                Some("b".into()),
                Some("a".into()),
                Some("c".into()),
            ]
        );
        assert_eq!(assign(&[vec![0], vec![3]], &seen, &nodes), Err(3));
        // Two files no node sees together: the unit cannot be read anywhere.
        assert_eq!(assign(&[vec![1, 2]], &seen, &nodes), Err(1));
    }
}
