<?php
/**
 * Privileges: judging roles and users by what they can do, never by their names.
 *
 * A capability is dangerous when whoever holds it can take over the site or its users: change
 * settings, users or roles, run code (plugins, themes, files, unfiltered HTML or uploads), or
 * update core. A role is privileged when it grants any dangerous capability (its capabilities
 * set to true); a user is privileged when their capabilities on this blog include one, or they
 * are a super admin of the network, or (on a network, where a user's row and password are
 * shared by every blog) their capabilities on any other blog they belong to include one.
 * Deliveries may neither give a privileged role nor touch a
 * privileged user, and privileged users are not reported, unless the site opted in
 * (USERRELAY_SYNC_PRIVILEGED, or the older USERRELAY_SYNC_ADMINS).
 *
 * Reads only.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Which roles and users are privileged.
 */
final class UserRelay_Privileges {

	/**
	 * Capabilities that make a role privileged. Any capability starting with "manage_network"
	 * counts too (manage_network, manage_network_users, _plugins, _themes, _options, ...).
	 */
	const DANGEROUS = array(
		'manage_options',
		'promote_users',
		'edit_users',
		'create_users',
		'delete_users',
		'remove_users',
		'unfiltered_html',
		'unfiltered_upload',
		'install_plugins',
		'activate_plugins',
		'edit_plugins',
		'update_plugins',
		'delete_plugins',
		'install_themes',
		'edit_themes',
		'update_themes',
		'delete_themes',
		'edit_files',
		'update_core',
		'import',
		'setup_network',
		'upgrade_network',
		'manage_sites',
		'create_sites',
		'delete_sites',
	);

	/** Capabilities starting with this are dangerous whatever follows. */
	const DANGEROUS_PREFIX = 'manage_network';

	/**
	 * Whether a capability is on the dangerous list.
	 *
	 * @param string $capability A capability name.
	 */
	public static function is_dangerous( string $capability ): bool {
		return in_array( $capability, self::DANGEROUS, true ) || 0 === strpos( $capability, self::DANGEROUS_PREFIX );
	}

	/**
	 * The dangerous capabilities among a capability map (name => granted).
	 *
	 * @param array $capabilities Capability map.
	 * @return string[]
	 */
	public static function dangerous_in( array $capabilities ): array {
		$found = array();
		foreach ( self::DANGEROUS as $capability ) { // In the list's order: the telling ones first.
			if ( ! empty( $capabilities[ $capability ] ) ) {
				$found[] = $capability;
			}
		}
		foreach ( $capabilities as $capability => $granted ) {
			if ( $granted && 0 === strpos( (string) $capability, self::DANGEROUS_PREFIX ) ) {
				$found[] = (string) $capability;
			}
		}
		return $found;
	}

	/**
	 * The dangerous capabilities a role grants (empty when it is not privileged or unknown).
	 *
	 * @param string $role A role name.
	 * @return string[]
	 */
	public static function role_grants( string $role ): array {
		$object = get_role( $role );
		return $object ? self::dangerous_in( (array) $object->capabilities ) : array();
	}

	/**
	 * Why a user is privileged here (a super admin, or the dangerous capabilities they hold on
	 * this blog), or null when they are not.
	 *
	 * @param WP_User $user The user.
	 */
	public static function user_problem( WP_User $user ): ?string {
		if ( is_multisite() && is_super_admin( $user->ID ) ) {
			return 'is a super admin of this network';
		}
		$held = self::dangerous_in( (array) $user->allcaps );
		if ( $held ) {
			return 'holds ' . implode( ', ', array_slice( $held, 0, 3 ) ) . ( count( $held ) > 3 ? ', ...' : '' );
		}
		return is_multisite() ? self::elsewhere( $user ) : null;
	}

	/**
	 * On a network, why a user is privileged on another blog they belong to, or null. Their row,
	 * email and password are the same on every blog: changing them, or sending them, from one
	 * blog would change or reveal an administrator of another.
	 *
	 * @param WP_User $user The user.
	 */
	private static function elsewhere( WP_User $user ): ?string {
		$here = (int) get_current_blog_id();
		foreach ( array_keys( get_blogs_of_user( $user->ID ) ) as $blog_id ) {
			if ( (int) $blog_id === $here ) {
				continue;
			}
			switch_to_blog( (int) $blog_id );
			try {
				$there = get_userdata( $user->ID );
				$held  = $there ? self::dangerous_in( (array) $there->allcaps ) : array();
			} finally {
				restore_current_blog();
			}
			if ( $held ) {
				return sprintf( 'holds %s on blog %d of this network', implode( ', ', array_slice( $held, 0, 3 ) ) . ( count( $held ) > 3 ? ', ...' : '' ), $blog_id );
			}
		}
		return null;
	}

	/**
	 * Whether a user is a super admin of this network (never on a single site). Super admins
	 * are never reported nor changed by a delivery, even where USERRELAY_SYNC_PRIVILEGED is true.
	 *
	 * @param WP_User $user The user.
	 */
	public static function is_super_admin( WP_User $user ): bool {
		return is_multisite() && is_super_admin( $user->ID );
	}

	/**
	 * Whether a user is privileged here.
	 *
	 * @param WP_User $user The user.
	 */
	public static function is_privileged( WP_User $user ): bool {
		return null !== self::user_problem( $user );
	}
}
