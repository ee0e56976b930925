//! `--plot FILE.svg`: cumulative stored bytes per step for every configuration and
//! the baselines. The y axis is logarithmic: full copies grow ~100× faster than
//! a page-level store, and on a linear axis every configuration would be one line
//! along the bottom.

use super::delta::CHAINS;
use super::report::Results;
use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use std::path::Path;

const MIB: f64 = 1048576.0;

pub fn write_svg(r: &Results, path: &Path) -> Result<()> {
    let mut series: Vec<(String, Vec<u64>)> = r
        .configs
        .iter()
        .map(|c| {
            let ys = c.records.iter().map(|x| x.stored).collect();
            (c.config.label(), ys)
        })
        .collect();
    series.push(("full copies".into(), r.cumulative(|o| o.full_bytes)));
    series.push(("ideal bound".into(), r.cumulative(|o| o.ideal_bytes)));
    // One chain bound of the delta bound (#27), to keep the legend short.
    if let Some(k) = CHAINS.iter().position(|&c| c == Some(8)) {
        series.push((
            "delta bound (K = 8)".into(),
            r.cumulative(|o| o.delta.bytes[k]),
        ));
    }

    let svg = render(r, &series).map_err(|e| anyhow!("drawing the plot: {e}"))?;
    std::fs::write(path, svg).with_context(|| format!("{}: cannot write the plot", path.display()))
}

fn render(
    r: &Results,
    series: &[(String, Vec<u64>)],
) -> Result<String, Box<dyn std::error::Error>> {
    let all = series.iter().flat_map(|(_, ys)| ys.iter().copied());
    // In MiB: a log axis puts its labels at round numbers of the plotted unit.
    let max = all.clone().max().unwrap_or(1).max(1) as f64 / MIB;
    let min = all.filter(|&y| y > 0).min().unwrap_or(1) as f64 / MIB;
    let last_step = r.observations.len().saturating_sub(1).max(1) as u32;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("pagesnap bench: {} (cumulative stored bytes)", r.workload),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0u32..last_step, (min / 1.5..max * 1.5).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("step (10 minutes each)")
            .y_desc("stored (MiB, log scale)")
            .y_labels(12)
            .y_label_formatter(&|v| format!("{v}"))
            .draw()?;
        let configs = r.configs.len();
        for (i, (name, ys)) in series.iter().enumerate() {
            // The baselines (last) in black, grey and pale blue, the configurations in colour.
            let color = if i < configs {
                Palette99::pick(i).to_rgba()
            } else if i == configs {
                BLACK.to_rgba()
            } else if i == configs + 1 {
                RGBColor(150, 150, 150).to_rgba()
            } else {
                RGBColor(120, 160, 200).to_rgba()
            };
            chart
                .draw_series(LineSeries::new(
                    ys.iter()
                        .enumerate()
                        .map(|(x, &y)| (x as u32, y.max(1) as f64 / MIB)),
                    color.stroke_width(2),
                ))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}
