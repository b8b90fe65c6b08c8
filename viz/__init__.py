"""Drawing graphs with values and adjoints (graphviz), and backprop walkthroughs."""
