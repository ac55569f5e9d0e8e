{#-
    Whether an order counts as a completed sale: its status is one of the
    `completed_order_statuses` project variable (by default paid, shipped or
    delivered, i.e. paid for and neither cancelled nor returned). Used by
    every model that reports revenue, so they agree on the definition.
-#}
{% macro is_completed_order(status_column) -%}
    {{ status_column }} in (
        {%- for status in var('completed_order_statuses') -%}
            '{{ status }}'{{ ', ' if not loop.last }}
        {%- endfor -%}
    )
{%- endmacro %}
