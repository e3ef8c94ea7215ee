"""The node pool: keeps CI labels ready across providers (any OpenStack cloud, infracloud's
own sites included) through openstacksdk, and hands nodes to CI systems that ask by label."""
