"""The analytic latency predictor of the LASNet paper (Sec. 3.3, Appendix A) and hardware profiles."""
