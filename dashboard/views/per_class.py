"""Per-class: IoU of every class for every run, and the difference between two runs."""
import streamlit as st

from dashboard import charts, loaders, tables, widgets

st.title("Per-class IoU")
st.caption("IoU of each of the 19 Cityscapes classes on the validation split (latest evaluation of each run). "
           "A blank cell: the class does not occur in the evaluated images.")

_, done = widgets.evaluated_runs_or_stop()
dataset = widgets.dataset_picker(done, key="perclass_dataset")
runs = done[done["dataset"] == dataset]
labels = tables.run_labels(runs)
matrix = tables.class_iou_matrix(loaders.class_iou_table(loaders.store_url(), tuple(labels)), labels)
if matrix.empty:
    st.info("These runs have no per-class results recorded.")
    st.stop()

st.plotly_chart(charts.class_iou_heatmap(matrix), width="stretch", key="heatmap_chart")
with st.expander("Table"):
    st.dataframe(matrix.style.format("{:.3f}", na_rep="–"), width="stretch")
    st.download_button("Download per-class IoU (CSV)", matrix.to_csv(index_label="run").encode(),
                       "per_class_iou.csv", "text/csv")

names = list(matrix.index)
if len(names) < 2:
    st.caption("With a second evaluated run, the per-class difference between two runs shows here.")
    st.stop()
st.subheader("Difference between two runs")
c1, c2 = st.columns(2)
a = c1.selectbox("Run A", names, index=0, key="perclass_a")
b = c2.selectbox("Run B", names, index=1, key="perclass_b")
if a == b:
    st.info("Pick two different runs to see where one beats the other.")
else:
    diff = (matrix.loc[b] - matrix.loc[a]).dropna()
    m1, m2, m3 = st.columns(3)
    m1.metric("Classes where B is better", int((diff > 0).sum()))
    m2.metric("Classes where A is better", int((diff < 0).sum()))
    miou = {labels[r.run_id]: r.miou for r in runs.itertuples()}
    m3.metric("mIoU difference (B − A)", f"{miou[b] - miou[a]:+.3f}")
    st.plotly_chart(charts.class_diff_figure(matrix, a, b), width="stretch", key="diff_chart")
