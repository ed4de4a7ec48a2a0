"""The Layer map tab: layout and callbacks (`tab`), the heatmap, control lines and cell
tables (`view`), k-sparse probing's figure (`probing_view`)."""
